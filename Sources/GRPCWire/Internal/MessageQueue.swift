/// A FIFO queue that allocates nothing until the first append (unlike NIO's CircularBuffer,
/// which allocates on creation): most calls queue a single message, or none.
struct MessageQueue<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }

    mutating func append(_ element: Element) {
        storage.append(element)
    }

    mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let element = storage[head]
        head += 1
        compact()
        return element
    }

    /// Mutates the first element in place.
    mutating func modifyFirst<R>(_ body: (inout Element) -> R) -> R {
        body(&storage[head])
    }

    mutating func removeFirst() {
        head += 1
        compact()
    }

    mutating func removeAll() {
        storage.removeAll()
        head = 0
    }

    /// Drops consumed slots once they dominate, keeping memory proportional to the backlog.
    private mutating func compact() {
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 16, head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
    }
}
