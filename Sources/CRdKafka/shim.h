#ifndef CRdKafka_SHIM_H
#define CRdKafka_SHIM_H
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/// Tests only: creates a topic on the mock cluster that `rk` hosts (a handle made with
/// `test.mock.num.brokers`; the mock cluster has no controller for CreateTopics).
/// Returns 0 (RD_KAFKA_RESP_ERR_NO_ERROR) or an rd_kafka_resp_err_t.
static inline int CRdKafka_mock_topic_create(rd_kafka_t *rk, const char *topic, int partitions) {
    rd_kafka_mock_cluster_t *mcluster = rd_kafka_handle_mock_cluster(rk);
    if (!mcluster)
        return RD_KAFKA_RESP_ERR__INVALID_ARG;
    return rd_kafka_mock_topic_create(mcluster, topic, partitions, 1);
}
#endif
