/// A FIFO queue that allocates nothing until it holds two elements (unlike NIO's
/// CircularBuffer, which allocates on creation, or an Array, on the first append): most calls
/// queue a single message, or none.
struct MessageQueue<Element> {
    /// The front element; nil exactly when the queue is empty.
    private var front: Element?
    /// The elements behind `front`, from index `head` on.
    private var rest: [Element] = []
    private var head = 0

    var isEmpty: Bool { front == nil }
    var count: Int { front == nil ? 0 : 1 + rest.count - head }

    mutating func append(_ element: Element) {
        if front == nil {
            front = element
        } else {
            rest.append(element)
        }
    }

    mutating func popFirst() -> Element? {
        guard let element = front else { return nil }
        if head < rest.count {
            front = rest[head]
            head += 1
            compact()
        } else {
            front = nil
        }
        return element
    }

    /// Mutates the first element in place; the queue must not be empty.
    mutating func modifyFirst<R>(_ body: (inout Element) -> R) -> R {
        body(&front!)
    }

    mutating func removeFirst() {
        _ = popFirst()
    }

    mutating func removeAll() {
        front = nil
        rest.removeAll()
        head = 0
    }

    /// Drops consumed slots once they dominate, keeping memory proportional to the backlog.
    private mutating func compact() {
        if head == rest.count {
            rest.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 16, head * 2 >= rest.count {
            rest.removeFirst(head)
            head = 0
        }
    }
}
