import Testing
import OrderDomain

@Suite("OrderValidation.isUUID")
struct UUIDTests {
    @Test func canonicalFormIsLowercase() {
        #expect(OrderValidation.canonicalUUID("D4E5F6A7-B8C9-4DAE-8F01-23456789ABCD") == "d4e5f6a7-b8c9-4dae-8f01-23456789abcd")
        #expect(OrderValidation.canonicalUUID("d4E5f6A7-b8C9-4dAe-8F01-23456789aBcD") == "d4e5f6a7-b8c9-4dae-8f01-23456789abcd")
        #expect(OrderValidation.canonicalUUID("6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11") == "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11")
        // Not a UUID: left as it is, so a validation message quotes what was sent.
        #expect(OrderValidation.canonicalUUID("NOT-A-UUID") == "NOT-A-UUID")
    }

    @Test(arguments: [
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11",
        "D4E5F6A7-B8C9-4DAE-8F01-23456789ABCD",
        "d4E5f6A7-b8C9-4dAe-8F01-23456789aBcD",
        "00000000-0000-0000-0000-000000000000",  // the nil UUID is well-formed text
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "01234567-89ab-cdef-ABCD-EF0123456789",  // every hex digit
        "6f1c1b7e-3a8e-7c55-9d0f-2b8f4a0e5c11",  // any version nibble
    ])
    func accepts(_ text: String) {
        #expect(OrderValidation.isUUID(text))
    }

    @Test(arguments: [
        "",
        "-",
        "6f1c1b7e3a8e4c559d0f2b8f4a0e5c11",  // 32 digits, no hyphens
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1",  // 35
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c111",  // 37
        "6f1c1b7e-3a8e-4c55-9d0f2-b8f4a0e5c11",  // hyphen one place late
        "6f1c1b7-e3a8e-4c55-9d0f-2b8f4a0e5c11",  // hyphen one place early
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1g",  // g
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1G",
        "6f1c1b7e_3a8e_4c55_9d0f_2b8f4a0e5c11",
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1 ",
        " 6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1",
        "{6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11}",
        "urn:uuid:6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11",
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1é",  // 36 characters, 37 bytes
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5cé",  // 35 characters, 36 bytes
        "６f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c",  // full-width digit
        "------------------------------------",
        "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c\u{0}\u{0}",
        "6f1c1b7e:3a8e:4c55:9d0f:2b8f4a0e5c11",
    ])
    func rejects(_ text: String) {
        #expect(!OrderValidation.isUUID(text))
    }

    @Test func hexDigitBoundaries() {
        // Characters just outside 0-9, a-f and A-F in ASCII.
        let base = Array("6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11")
        for c in ["/", ":", "@", "G", "`", "g"] {
            var chars = base
            chars[0] = Character(c)
            #expect(!OrderValidation.isUUID(String(chars)), "\(c)")
        }
        for c in ["0", "9", "a", "f", "A", "F"] {
            var chars = base
            chars[35] = Character(c)
            #expect(OrderValidation.isUUID(String(chars)), "\(c)")
        }
    }
}

@Suite("OrderValidation.priceProblem")
struct PriceTests {
    @Test(arguments: [
        "123.45", "0.01", "7", "10.5", "0.1", "0.10", "1.00", "5.0", "100", "999999999999999.99",
        "123456789012345",  // 15 integer digits: the most allowed
        "000000000000000000001",  // leading zeros are not significant digits
    ])
    func accepts(_ price: String) {
        #expect(OrderValidation.priceProblem(price) == nil, "\(price)")
    }

    @Test(arguments: [
        "", "abc", "-1", "-0.01", "1e5", "1E5", "+5", ".5", "5.", "1,5", "1.2.3", ".", "..",
        " 1", "1 ", "1 000", "1_000", "0x1F", "NaN", "Infinity", "inf", "١", "１", "½", "5.-1", "5.+1", "-.5",
    ])
    func rejectsWhatIsNotADecimal(_ price: String) throws {
        let problem = try #require(OrderValidation.priceProblem(price), "\(price)")
        #expect(problem.hasPrefix("price must be a decimal"), "\(problem)")
    }

    @Test(arguments: ["1.234", "0.001", "0.005", "10.000", "1.999999"])
    func rejectsMoreThanTwoFractionalDigits(_ price: String) throws {
        let problem = try #require(OrderValidation.priceProblem(price))
        #expect(problem.contains("at most 2 fractional digits"), "\(problem)")
    }

    @Test(arguments: ["0", "00", "0.0", "0.00", "000.00"])
    func rejectsZero(_ price: String) throws {
        let problem = try #require(OrderValidation.priceProblem(price))
        #expect(problem.contains("positive"), "\(problem)")
    }

    @Test(arguments: [
        "1234567890123456", "9999999999999999", "1000000000000000.00", "0001234567890123456",
        "99999999999999999999999999999999999999",
    ])
    func rejectsSixteenOrMoreIntegerDigits(_ price: String) throws {
        let problem = try #require(OrderValidation.priceProblem(price))
        #expect(problem.contains("too large"), "\(problem)")
    }

    @Test func problemsQuoteTheText() throws {
        let problem = try #require(OrderValidation.priceProblem("12,50"))
        #expect(problem.contains("'12,50'"))
        let long = String(repeating: "9", count: 300)
        let tooLarge = try #require(OrderValidation.priceProblem(long))
        #expect(tooLarge.count < 120, "a huge value is clipped in the message")
    }
}
