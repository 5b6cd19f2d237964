// A restricted unpickler: just enough of Python's pickle machine to read a
// PyTorch state dict, and nothing that could run code.
//
// A state dict pickle is an OrderedDict whose values are
// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) calls,
// the storages being persistent ids ('storage', torch.FloatStorage, key,
// location, numel) that point at raw bytes elsewhere in the file. Python
// would import and call whatever GLOBAL names; here a GLOBAL is only looked
// up in a short table of the names a state dict uses, and any other name
// (os.system, builtins.eval, ...) stops the load with an error naming it.
// Opcodes outside the table below are refused the same way.
import Foundation

public struct TorchFileError: Error, CustomStringConvertible {
    public let description: String
    public init(_ path: String, _ reason: String) { description = "\(path): \(reason)" }
}

/// What a storage's persistent id says.
public struct StorageRef: Equatable {
    public let key: String, dtype: TorchDType, count: Int
}

public enum TorchDType: String {
    case float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool
    var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }
    /// torch.<X>Storage names.
    static let storages: [String: TorchDType] = [
        "FloatStorage": .float32, "DoubleStorage": .float64, "HalfStorage": .float16, "BFloat16Storage": .bfloat16,
        "LongStorage": .int64, "IntStorage": .int32, "ShortStorage": .int16, "CharStorage": .int8,
        "ByteStorage": .uint8, "BoolStorage": .bool
    ]
}

/// A tensor as the pickle describes it: a view of a storage.
public struct TensorRef: Equatable {
    public let storage: StorageRef, offset: Int, shape: [Int], stride: [Int]
}

/// The values this unpickler builds. `global` is one of the allowed names.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes(Data)
    case tuple([PickleValue])
    case list([PickleValue])
    case dict([(PickleValue, PickleValue)])
    case global(String)
    case storage(StorageRef)
    case tensor(TensorRef)
    case mark

    var int: Int? {
        if case .int(let v) = self { return v }
        return nil
    }
    /// A description of bounded length (a value's full text can be arbitrarily large).
    var brief: String {
        func cut(_ s: String) -> String { s.count > 60 ? String(s.prefix(60)) + "... (\(s.utf8.count) bytes)" : s }
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let v): return "\(v)"
        case .float(let v): return "\(v)"
        case .string(let v): return "'" + cut(v) + "'"
        case .bytes(let v): return "\(v.count) bytes"
        case .tuple(let v): return "a tuple of \(v.count)"
        case .list(let v): return "a list of \(v.count)"
        case .dict(let v): return "a dict of \(v.count)"
        case .global(let g): return g
        case .storage(let s): return "a \(s.dtype) storage"
        case .tensor(let t): return "a tensor of shape \(t.shape.prefix(8))"
        case .mark: return "MARK"
        }
    }
    var items: [PickleValue]? {
        switch self {
        case .tuple(let v), .list(let v): return v
        default: return nil
        }
    }
}

struct Unpickler {
    /// Every global a state dict may name; anything else is refused.
    static let allowed: Set<String> = Set(
        [
            "collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter"
        ]
            + TorchDType.storages.keys.map { "torch." + $0 })

    /// Deepest nesting of containers accepted (a state dict needs about 5; Python's own limit is
    /// about 1000 and a deeper value would overflow the stack when freed or printed).
    static let maxDepth = 64
    /// Most values one value may stand for when memo references are expanded (a 1 MB pickle can
    /// otherwise describe a 2^60-leaf tuple by sharing; a state dict has a few thousand).
    static let maxSize = 4_000_000
    /// Most memo entries (a state dict has a few per tensor).
    static let maxMemo = 1_000_000

    /// A value on the stack or in the memo, with its nesting depth and its size (values it
    /// stands for, shared ones counted each time), both known when it is built.
    struct Item { var value: PickleValue, depth: Int, size: Int }

    let bytes: [UInt8], path: String
    var pos: Int
    var stack: [Item] = []
    var memo: [Int: Item] = [:]

    init(_ bytes: [UInt8], at pos: Int = 0, path: String) {
        self.bytes = bytes
        self.pos = pos
        self.path = path
    }

    func fail(_ why: String) -> TorchFileError { TorchFileError(path, why) }

    mutating func read(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, pos + n <= bytes.count else {
            throw fail("the pickle ends early (truncated file?) at byte \(pos)")
        }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }
    mutating func u8() throws -> Int { Int(try read(1).first!) }
    mutating func le(_ n: Int) throws -> Int { // unsigned little-endian
        var v = 0
        for (i, b) in try read(n).enumerated() { v |= Int(b) << (8 * i) }
        return v
    }
    mutating func line() throws -> String {
        guard let end = bytes[pos...].firstIndex(of: 0x0A) else { throw fail("the pickle ends inside a GLOBAL name") }
        defer { pos = end + 1 }
        return String(decoding: bytes[pos..<end], as: UTF8.self)
    }
    mutating func popItem() throws -> Item {
        guard let v = stack.popLast() else { throw fail("malformed pickle: stack empty at byte \(pos)") }
        return v
    }
    mutating func pop() throws -> PickleValue { try popItem().value }
    /// The items since the topmost mark, which is removed.
    mutating func popMark() throws -> [Item] {
        guard
            let m = stack.lastIndex(where: {
                if case .mark = $0.value { return true }
                return false
            })
        else {
            throw fail("malformed pickle: no MARK at byte \(pos)")
        }
        let items = Array(stack[(m + 1)...])
        stack.removeSubrange(m...)
        return items
    }
    /// Pushes a leaf value.
    mutating func push(_ v: PickleValue) { stack.append(Item(value: v, depth: 0, size: 1)) }
    /// The depth and size of a container of `children` (or of `base` grown by them in place, as
    /// APPEND and SETITEM do: its depth does not grow with each call), refused past the limits.
    func measure(_ children: [Item], at: Int, growing base: Item? = nil) throws -> (depth: Int, size: Int) {
        var depth = base?.depth ?? 0, size = base?.size ?? 1
        for c in children {
            depth = Swift.max(depth, c.depth + 1)
            size = size.addingReportingOverflow(c.size).overflow ? Int.max : size + c.size
        }
        guard depth <= Self.maxDepth else {
            throw fail(
                "malformed pickle: containers nested more than \(Self.maxDepth) deep at byte \(at) (a state dict needs about 5)"
            )
        }
        guard size <= Self.maxSize else {
            throw fail(
                "malformed pickle: a value standing for more than \(Self.maxSize) values at byte \(at) (shared memo entries; a state dict has a few thousand)"
            )
        }
        return (depth, size)
    }
    /// Pushes a container built from `children`.
    mutating func push(_ v: PickleValue, children: [Item], at: Int) throws {
        let m = try measure(children, at: at)
        stack.append(Item(value: v, depth: m.depth, size: m.size))
    }
    mutating func remember(_ key: Int, at: Int) throws {
        guard let top = stack.last else { throw fail("malformed pickle: memo of an empty stack at byte \(at)") }
        guard memo.count < Self.maxMemo || memo[key] != nil else {
            throw fail("malformed pickle: more than \(Self.maxMemo) memo entries")
        }
        memo[key] = top
    }

    mutating func global(_ module: String, _ name: String) throws -> PickleValue {
        let full = module + "." + name
        guard Self.allowed.contains(full) else {
            throw fail(
                "refusing the pickle global '\(full)': a state dict needs only OrderedDict, tensors and storages (the file may try to run code)"
            )
        }
        return .global(full)
    }

    /// Runs the pickle to its STOP and returns the value; `persistent` turns a persistent id into a storage.
    mutating func load() throws -> PickleValue {
        while true {
            let at = pos
            let op = try u8()
            switch op {
            case 0x80: _ = try u8() // PROTO
            case 0x95: _ = try read(8) // FRAME
            case 0x2E: return try pop() // STOP
            case 0x28: push(.mark) // MARK
            case 0x4E: push(.none) // NONE
            case 0x88: push(.bool(true)) // NEWTRUE
            case 0x89: push(.bool(false)) // NEWFALSE
            case 0x4A: push(.int(Int(Int32(truncatingIfNeeded: try le(4))))) // BININT
            case 0x4B: push(.int(try u8())) // BININT1
            case 0x4D: push(.int(try le(2))) // BININT2
            case 0x8A: // LONG1
                let n = try u8()
                let b = Array(try read(n))
                if n <= 8 {
                    var v: UInt64 = 0
                    for (i, x) in b.enumerated() { v |= UInt64(x) << (8 * UInt64(i)) }
                    if n > 0, n < 8, b[n - 1] & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(n)) } // sign-extend
                    push(.int(Int(Int64(bitPattern: v))))
                } else {
                    push(.bytes(Data(b))) // a big number (the legacy magic)
                }
            case 0x47: push(.float(Double(bitPattern: UInt64(try le(8)).byteSwapped))) // BINFLOAT (big-endian)
            case 0x58: push(.string(String(decoding: try read(try le(4)), as: UTF8.self))) // BINUNICODE
            case 0x8C: push(.string(String(decoding: try read(try u8()), as: UTF8.self))) // SHORT_BINUNICODE
            case 0x43: push(.bytes(Data(try read(try u8())))) // SHORT_BINBYTES
            case 0x42: push(.bytes(Data(try read(try le(4))))) // BINBYTES
            case 0x29: push(.tuple([])) // EMPTY_TUPLE
            case 0x5D: push(.list([])) // EMPTY_LIST
            case 0x7D: push(.dict([])) // EMPTY_DICT
            case 0x74: try pushTuple(try popMark(), at: at) // TUPLE
            case 0x85: try pushTuple([try popItem()], at: at) // TUPLE1
            case 0x86:
                let b = try popItem(), a = try popItem()
                try pushTuple([a, b], at: at) // TUPLE2
            case 0x87:
                let c = try popItem(), b = try popItem(), a = try popItem()
                try pushTuple([a, b, c], at: at) // TUPLE3
            case 0x71: try remember(try u8(), at: at) // BINPUT
            case 0x72: try remember(try le(4), at: at) // LONG_BINPUT
            case 0x94: try remember(memo.count, at: at) // MEMOIZE
            case 0x68, 0x6A: // BINGET, LONG_BINGET
                let k = op == 0x68 ? try u8() : try le(4)
                guard let v = memo[k] else { throw fail("malformed pickle: memo \(k) unset at byte \(at)") }
                stack.append(v)
            case 0x63: push(try global(try line(), try line())) // GLOBAL
            case 0x93: // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case .string(let n) = name, case .string(let m) = module else {
                    throw fail("malformed STACK_GLOBAL at byte \(at)")
                }
                push(try global(m, n))
            case 0x51: push(try persistent(try pop())) // BINPERSID
            case 0x52: // REDUCE
                let args = try popItem(), f = try popItem()
                try push(try call(f.value, args.value), children: [args], at: at)
            case 0x62: _ = try pop() // BUILD: state of an OrderedDict (_metadata): ignored
            case 0x73: // SETITEM
                let v = try popItem(), k = try popItem()
                try setItems([k, v], at: at)
            case 0x75: try setItems(try popMark(), at: at) // SETITEMS
            case 0x61: try append([try popItem()], at: at) // APPEND
            case 0x65: try append(try popMark(), at: at) // APPENDS
            default:
                throw fail(
                    String(format: "refusing pickle opcode 0x%02x at byte %d (not used by a state dict)", op, at))
            }
        }
    }

    mutating func pushTuple(_ items: [Item], at: Int) throws {
        try push(.tuple(items.map(\.value)), children: items, at: at)
    }

    /// APPEND(S): the list below the items gains them.
    mutating func append(_ items: [Item], at: Int) throws {
        let list = try popItem()
        guard case .list(var l) = list.value else { throw fail("malformed APPEND(S) at byte \(at)") }
        l += items.map(\.value)
        let m = try measure(items, at: at, growing: list)
        stack.append(Item(value: .list(l), depth: m.depth, size: m.size))
    }

    mutating func setItems(_ kv: [Item], at: Int) throws {
        let dict = try popItem()
        guard kv.count % 2 == 0, case .dict(var d) = dict.value else {
            throw fail("malformed SETITEM(S) at byte \(at)")
        }
        for i in stride(from: 0, to: kv.count, by: 2) { d.append((kv[i].value, kv[i + 1].value)) }
        let m = try measure(kv, at: at, growing: dict)
        stack.append(Item(value: .dict(d), depth: m.depth, size: m.size))
    }

    /// ('storage', torch.XStorage, key, location, numel[, view]).
    func persistent(_ pid: PickleValue) throws -> PickleValue {
        guard let t = pid.items, t.count >= 5, case .string("storage") = t[0], case .global(let type) = t[1],
            let dtype = TorchDType.storages[String(type.dropFirst("torch.".count))]
        else {
            throw fail("unexpected persistent id \(pid.brief) (not a tensor storage)")
        }
        let key: String
        switch t[2] {
        case .string(let s): key = s
        case .int(let i): key = "\(i)"
        default: throw fail("unexpected storage key \(t[2].brief)")
        }
        guard let n = t[4].int, n >= 0 else { throw fail("unexpected storage size \(t[4].brief)") }
        return .storage(StorageRef(key: key, dtype: dtype, count: n))
    }

    /// The allowed callables: OrderedDict(), _rebuild_tensor_v2(...), _rebuild_parameter(tensor, ...).
    func call(_ f: PickleValue, _ args: PickleValue) throws -> PickleValue {
        guard case .global(let name) = f, let a = args.items else {
            throw fail("REDUCE of something not callable: \(f.brief)")
        }
        switch name {
        case "collections.OrderedDict":
            return .dict([])
        case "torch._utils._rebuild_tensor_v2":
            guard a.count >= 4, case .storage(let s) = a[0], let offset = a[1].int,
                let shape = a[2].items?.compactMap(\.int), let stride = a[3].items?.compactMap(\.int),
                shape.count == a[2].items?.count, stride.count == shape.count
            else {
                throw fail("malformed _rebuild_tensor_v2 arguments")
            }
            return .tensor(TensorRef(storage: s, offset: offset, shape: shape, stride: stride))
        case "torch._utils._rebuild_parameter":
            guard let t = a.first, case .tensor = t else { throw fail("malformed _rebuild_parameter arguments") }
            return t
        default:
            throw fail("refusing to call '\(name)'")
        }
    }
}
