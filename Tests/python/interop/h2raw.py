"""Just enough raw HTTP/2 to misbehave on purpose (the abuse tests): frames, and HPACK
literals without Huffman coding or indexing."""

import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CANCEL = 0x8


def frame(kind, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def settings(**values):
    ids = {"initial_window_size": 4, "max_frame_size": 5}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def _integer(value, prefix_bits=7):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def header_block(headers):
    block = b""
    for name, value in headers:
        name, value = name.encode(), value.encode()
        block += b"\x00" + _integer(len(name)) + name + _integer(len(value)) + value
    return block


def grpc_request_headers(stream_id, path, end_stream=False, extra=()):
    headers = [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
        ("content-type", "application/grpc"), ("te", "trailers"), *extra,
    ]
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return frame(HEADERS, flags, stream_id, header_block(headers))


def grpc_message(serialized):
    return struct.pack(">BI", 0, len(serialized)) + serialized


def connect(address, timeout=10.0):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    return sock


def read_frames(sock, until_closed=True, timeout=10.0):
    """Reads frames until EOF (or timeout); returns [(type, flags, stream, payload)]."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if not until_closed:
                break
    except socket.timeout:
        pass
    frames = []
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset:offset + 3], "big")
        kind, flags = data[offset + 3], data[offset + 4]
        stream = int.from_bytes(data[offset + 5:offset + 9], "big") & 0x7FFFFFFF
        frames.append((kind, flags, stream, data[offset + 9:offset + 9 + length]))
        offset += 9 + length
    return frames
