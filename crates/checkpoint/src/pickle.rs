//! A small pickle reader for PyTorch checkpoints: the opcodes `torch.save` emits (protocol 2,
//! plus the protocol 4 opcodes newer Pythons use), evaluated without running any Python.
//!
//! Objects live in an arena and the stack and memo hold their indices, so that a container
//! memoised before it is filled (pickle's usual order) is seen filled wherever it is
//! referenced, and a reference costs no copy: an input can make no more objects than it has
//! opcodes. Nothing is called. `REDUCE` and `NEWOBJ` give an [`Obj::Call`] of the global on its
//! arguments, which the checkpoint reader interprets for the few functions it knows, except
//! that the dictionary types give an [`Obj::Dict`] (pickle fills them with `SETITEMS`); a
//! persistent id gives an [`Obj::Persistent`].

use std::collections::HashMap;
use std::fmt;

/// Index of an object in [`Pickle::objs`].
pub(crate) type Id = usize;

/// A Python object as far as a checkpoint needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond `i64`, as little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    /// A list, set or frozenset.
    List(Vec<Id>),
    /// A dict or `OrderedDict`, in insertion order (a repeated key keeps both entries).
    Dict(Vec<(Id, Id)>),
    /// A global name (`GLOBAL` or `STACK_GLOBAL`).
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)`, from `REDUCE` or `NEWOBJ`, never evaluated.
    Call {
        callable: Id,
        args: Id,
    },
    /// A persistent id, resolved by the caller (PyTorch's storages).
    Persistent(Id),
}

/// What a pickle holds.
#[derive(Debug)]
pub(crate) struct Pickle {
    /// Every object made.
    pub objs: Vec<Obj>,
    /// The object the pickle returns.
    pub root: Id,
    /// Bytes read, up to and including `STOP`.
    pub end: usize,
}

impl Pickle {
    /// The object `id` refers to.
    pub fn get(&self, id: Id) -> &Obj {
        // Ids come from this arena only, so they are in range.
        &self.objs[id]
    }

    /// The string `id` refers to.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer `id` refers to.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Obj::Int(v) => Some(*v),
            Obj::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }

    /// The value under string key `key` of dict `id` (the last one when repeated).
    pub fn dict_get(&self, id: Id, key: &str) -> Option<Id> {
        match self.get(id) {
            Obj::Dict(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| self.str(*k) == Some(key))
                .map(|(_, v)| *v),
            _ => None,
        }
    }

    /// `(module, name)` of a global.
    pub fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.get(id) {
            Obj::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleError {
    /// Byte offset of the opcode.
    pub at: usize,
    /// What is wrong there.
    pub what: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad pickle at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for PickleError {}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for errors.
    at: usize,
    objs: Vec<Obj>,
    stack: Vec<Id>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

type Step<T> = Result<T, PickleError>;

impl Machine<'_> {
    fn fail<T>(&self, what: impl Into<String>) -> Step<T> {
        Err(PickleError {
            at: self.at,
            what: what.into(),
        })
    }

    fn take(&mut self, n: usize) -> Step<&[u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            _ => self.fail(format!("{n} bytes announced past the end of the data")),
        }
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Step<usize> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn u64(&mut self) -> Step<usize> {
        let v = u64::from_le_bytes(self.array()?);
        match usize::try_from(v) {
            Ok(v) => Ok(v),
            Err(_) => self.fail("length too large"),
        }
    }

    /// A text-protocol argument: bytes up to the next newline.
    fn line(&mut self) -> Step<String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.fail("unterminated line");
        };
        let text = latin1(&rest[..n]);
        self.pos += n + 1;
        Ok(text)
    }

    fn push(&mut self, obj: Obj) {
        self.objs.push(obj);
        self.stack.push(self.objs.len() - 1);
    }

    fn pop(&mut self) -> Step<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.fail("stack underflow");
        }
        match self.stack.pop() {
            Some(id) => Ok(id),
            None => self.fail("stack underflow"),
        }
    }

    fn top(&self) -> Step<Id> {
        match self.stack.last() {
            Some(&id) => Ok(id),
            None => self.fail("empty stack"),
        }
    }

    /// The objects pushed since the last `MARK`, which is removed.
    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        match self.marks.pop() {
            Some(m) if m <= self.stack.len() => Ok(self.stack.split_off(m)),
            _ => self.fail("no mark"),
        }
    }

    fn memo_put(&mut self, key: u64) -> Step<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Step<()> {
        match self.memo.get(&key) {
            Some(&id) => {
                self.stack.push(id);
                Ok(())
            }
            None => self.fail(format!("memo key {key} was never stored")),
        }
    }

    fn string(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                let s = s.to_owned();
                self.push(Obj::Str(s));
                Ok(())
            }
            Err(_) => self.fail("string is not UTF-8"),
        }
    }

    fn bytes(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?.to_vec();
        self.push(Obj::Bytes(bytes));
        Ok(())
    }

    /// Python 2 `str`: bytes, read as Latin-1 text (keys of old checkpoints).
    fn byte_string(&mut self, n: usize) -> Step<()> {
        let text = latin1(self.take(n)?);
        self.push(Obj::Str(text));
        Ok(())
    }

    fn long(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?;
        let obj = if bytes.len() <= 8 {
            let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
            let mut full = [if negative { 0xff } else { 0 }; 8];
            full[..bytes.len()].copy_from_slice(bytes);
            Obj::Int(i64::from_le_bytes(full))
        } else {
            Obj::BigInt(bytes.to_vec())
        };
        self.push(obj);
        Ok(())
    }

    fn call(&mut self, args: Id) -> Step<()> {
        let callable = self.pop()?;
        let dict = matches!(
            &self.objs[callable],
            Obj::Global { module, name }
                if matches!(
                    (module.as_str(), name.as_str()),
                    ("collections", "OrderedDict" | "defaultdict")
                        | ("builtins" | "__builtin__", "dict")
                )
        );
        self.push(if dict {
            Obj::Dict(Vec::new())
        } else {
            Obj::Call { callable, args }
        });
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Id>) -> Step<()> {
        if !items.len().is_multiple_of(2) {
            return self.fail("odd number of dict items");
        }
        let target = self.top()?;
        // Items for anything but a dict (a dict subclass we did not recognise) are dropped:
        // only tensors in dicts matter here.
        if let Obj::Dict(entries) = &mut self.objs[target] {
            entries.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Id>) -> Step<()> {
        let target = self.top()?;
        if let Obj::List(list) = &mut self.objs[target] {
            list.extend(items);
        }
        Ok(())
    }

    fn global(&mut self, module: String, name: String) {
        self.push(Obj::Global { module, name });
    }

    /// Runs one opcode; `Some(root)` at `STOP`.
    fn step(&mut self) -> Step<Option<Id>> {
        self.at = self.pos;
        let op = self.u8()?;
        match op {
            0x80 => {
                // PROTO
                let v = self.u8()?;
                if v > 5 {
                    return self.fail(format!("unknown pickle protocol {v}"));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                self.take(8)?;
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.push(Obj::Dict(Vec::new())),
            b']' | 0x8f => self.push(Obj::List(Vec::new())),
            b')' => self.push(Obj::Tuple(Vec::new())),
            b'N' => self.push(Obj::None),
            0x88 => self.push(Obj::Bool(true)),
            0x89 => self.push(Obj::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Obj::Int(i64::from(v)));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Obj::Int(i64::from(v)));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Obj::Int(i64::from(v)));
            }
            0x8a => {
                let n = usize::from(self.u8()?);
                self.long(n)?;
            }
            0x8b => {
                let n = i32::from_le_bytes(self.array()?);
                match usize::try_from(n) {
                    Ok(n) => self.long(n)?,
                    Err(_) => return self.fail("negative length"),
                }
            }
            b'I' | b'L' => {
                let line = self.line()?;
                let text = line.trim_end_matches('L');
                let obj = match (op, text) {
                    (b'I', "00") => Obj::Bool(false),
                    (b'I', "01") => Obj::Bool(true),
                    _ => match text.parse() {
                        Ok(v) => Obj::Int(v),
                        Err(_) => return self.fail(format!("bad integer `{line}`")),
                    },
                };
                self.push(obj);
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Obj::Float(v));
            }
            b'F' => {
                let line = self.line()?;
                match line.parse() {
                    Ok(v) => self.push(Obj::Float(v)),
                    Err(_) => return self.fail(format!("bad float `{line}`")),
                }
            }
            b'X' => {
                let n = self.u32()?;
                self.string(n)?;
            }
            0x8c => {
                let n = usize::from(self.u8()?);
                self.string(n)?;
            }
            0x8d => {
                let n = self.u64()?;
                self.string(n)?;
            }
            b'V' => {
                let line = self.line()?;
                self.push(Obj::Str(line));
            }
            b'T' => {
                let n = i32::from_le_bytes(self.array()?);
                match usize::try_from(n) {
                    Ok(n) => self.byte_string(n)?,
                    Err(_) => return self.fail("negative length"),
                }
            }
            b'U' => {
                let n = usize::from(self.u8()?);
                self.byte_string(n)?;
            }
            b'B' => {
                let n = self.u32()?;
                self.bytes(n)?;
            }
            b'C' => {
                let n = usize::from(self.u8()?);
                self.bytes(n)?;
            }
            0x8e | 0x96 => {
                let n = self.u64()?;
                self.bytes(n)?;
            }
            b'q' => {
                let k = self.u8()?;
                self.memo_put(u64::from(k))?;
            }
            b'r' => {
                let k = self.u32()?;
                self.memo_put(k as u64)?;
            }
            0x94 => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?;
            }
            b'p' | b'g' => {
                let line = self.line()?;
                let Ok(k) = line.parse::<u64>() else {
                    return self.fail(format!("bad memo key `{line}`"));
                };
                if op == b'p' {
                    self.memo_put(k)?;
                } else {
                    self.memo_get(k)?;
                }
            }
            b'h' => {
                let k = self.u8()?;
                self.memo_get(u64::from(k))?;
            }
            b'j' => {
                let k = self.u32()?;
                self.memo_get(k as u64)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&self.objs[module], &self.objs[name]) {
                    (Obj::Str(m), Obj::Str(n)) => {
                        let (m, n) = (m.clone(), n.clone());
                        self.global(m, n);
                    }
                    _ => return self.fail("STACK_GLOBAL of non-strings"),
                }
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Obj::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Obj::Tuple(items));
            }
            b'l' | 0x91 => {
                let items = self.pop_mark()?;
                self.push(Obj::List(items));
            }
            b'a' => {
                let item = self.pop()?;
                self.append(vec![item])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Obj::Dict(Vec::new()));
                self.set_items(items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                self.call(args)?;
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                self.call(args)?;
            }
            b'b' => {
                // BUILD sets an object's state (an OrderedDict's `_metadata`, a module's
                // attributes); no state is needed here.
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                self.push(Obj::Persistent(pid));
            }
            b'P' => {
                let line = self.line()?;
                self.push(Obj::Str(line));
                let pid = self.pop()?;
                self.push(Obj::Persistent(pid));
            }
            b'0' => {
                if self.marks.last().is_some_and(|&m| m == self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            _ => return self.fail(format!("unsupported opcode 0x{op:02x}")),
        }
        Ok(None)
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Reads the pickle at the start of `data` (data after its `STOP` is left alone).
pub(crate) fn parse(data: &[u8]) -> Result<Pickle, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        at: 0,
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        if m.pos >= data.len() {
            m.at = m.pos;
            return m.fail("no STOP before the end of the data");
        }
        if let Some(root) = m.step()? {
            return Ok(Pickle {
                objs: m.objs,
                root,
                end: m.pos,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pickles written by CPython 3 (`pickle.dumps(obj, protocol=N)`), as byte strings.

    #[test]
    fn reads_a_protocol_2_dict_with_shared_references() {
        // pickle.dumps({'a': [1, -2, 70000], 'b': ('x', None, True), 'c': 2**70}, protocol=2)
        // with the list memoised and referenced twice: {'a': l, 'b': (...), 'c': ..., 'd': l}.
        let mut p = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'q', 1,
        ];
        p.extend([b']', b'q', 2, b'(', b'K', 1, b'J']);
        p.extend((-2i32).to_le_bytes());
        p.extend([b'J']);
        p.extend(70000i32.to_le_bytes());
        p.extend([
            b'e', b'X', 1, 0, 0, 0, b'b', b'X', 1, 0, 0, 0, b'x', b'N', 0x88, 0x87,
        ]);
        p.extend([
            b'X', 1, 0, 0, 0, b'c', 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40,
        ]);
        p.extend([b'X', 1, 0, 0, 0, b'd', b'h', 2, b'u', b'.']);
        let pk = parse(&p).expect("parses");
        assert_eq!(pk.end, p.len());
        let a = pk.dict_get(pk.root, "a").expect("a");
        let d = pk.dict_get(pk.root, "d").expect("d");
        assert_eq!(a, d, "the memo shares, not copies");
        let ints: Vec<i64> = pk
            .items(a)
            .expect("list")
            .iter()
            .filter_map(|&i| pk.int(i))
            .collect();
        assert_eq!(ints, [1, -2, 70000]);
        let b = pk
            .items(pk.dict_get(pk.root, "b").expect("b"))
            .expect("tuple");
        assert_eq!(pk.str(b[0]), Some("x"));
        assert_eq!(pk.get(b[1]), &Obj::None);
        assert_eq!(pk.get(b[2]), &Obj::Bool(true));
        assert_eq!(
            pk.get(pk.dict_get(pk.root, "c").expect("c")),
            &Obj::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])
        );
    }

    #[test]
    fn ordered_dict_reduce_is_a_dict_and_other_calls_stay_calls() {
        // collections.OrderedDict() filled by SETITEMS, then BUILD with a `_metadata` state.
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"collections\nOrderedDict\n");
        p.extend([b')', b'R', b'(', b'X', 1, 0, 0, 0, b'k', b'c']);
        p.extend(b"torch\nFloatStorage\n");
        p.extend([b')', b'R', b'u', b'}', b'b', b'.']);
        let pk = parse(&p).expect("parses");
        let v = pk.dict_get(pk.root, "k").expect("k");
        match pk.get(v) {
            Obj::Call { callable, .. } => {
                assert_eq!(pk.global(*callable), Some(("torch", "FloatStorage")));
            }
            other => panic!("{other:?}"),
        }
        match pk.get(pk.root) {
            Obj::Dict(entries) => assert_eq!(entries.len(), 1, "BUILD adds no entry"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_4_opcodes() {
        // SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, FRAME, TUPLE2, BINFLOAT.
        let mut p = vec![0x80, 4, 0x95];
        p.extend(30u64.to_le_bytes());
        p.extend([0x8c, 5]);
        p.extend(b"torch");
        p.extend([0x94, 0x8c, 5]);
        p.extend(b"Size2");
        p.extend([0x94, 0x93, 0x94, b'G']);
        p.extend(1.5f64.to_be_bytes());
        p.extend([0x86, b'.']);
        let pk = parse(&p).expect("parses");
        let items = pk.items(pk.root).expect("tuple");
        assert_eq!(pk.global(items[0]), Some(("torch", "Size2")));
        assert_eq!(pk.get(items[1]), &Obj::Float(1.5));
    }

    #[test]
    fn persistent_ids_are_kept_for_the_caller() {
        let mut p = vec![0x80, 2, b'(', b'X', 7, 0, 0, 0];
        p.extend(b"storage");
        p.extend([b'K', 3, b't', b'Q', b'.']);
        let pk = parse(&p).expect("parses");
        let Obj::Persistent(pid) = pk.get(pk.root) else {
            panic!("{:?}", pk.get(pk.root))
        };
        let items = pk.items(*pid).expect("tuple");
        assert_eq!(pk.str(items[0]), Some("storage"));
        assert_eq!(pk.int(items[1]), Some(3));
    }

    #[test]
    fn malformed_input_is_an_error_with_its_offset() {
        for (bytes, what) in [
            (&b""[..], "no STOP"),
            (&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f][..], "past the end"),
            (&[0x80, 2, b'h', 9, b'.'][..], "never stored"),
            (&[0x80, 2, b'.'][..], "underflow"),
            (&[0x80, 2, b'K', 1, b't', b'.'][..], "no mark"),
            (&[0x80, 2, 0xff][..], "unsupported opcode 0xff"),
            (&[0x80, 9, b'.'][..], "protocol 9"),
            (&[0x80, 2, b'(', b'.'][..], "underflow"),
        ] {
            let err = parse(bytes).expect_err("malformed");
            assert!(err.to_string().contains(what), "{bytes:?}: {err}");
        }
        let err = parse(&[0x80, 2, b'N', 0x00]).expect_err("bad opcode");
        assert_eq!(err.at, 3);
    }

    #[test]
    fn every_truncation_and_byte_flip_fails_cleanly() {
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"collections\nOrderedDict\n");
        // {'k': the dict itself, 'l': [1, 2]}: a cycle through the memo.
        p.extend([
            b'q', 0, b')', b'R', b'q', 1, b'(', b'X', 1, 0, 0, 0, b'k', b'h', 1,
        ]);
        p.extend([
            b'X', 1, 0, 0, 0, b'l', b']', b'(', b'K', 1, b'K', 2, b'e', b'u', b'.',
        ]);
        parse(&p).expect("the original parses");
        for n in 0..p.len() {
            let _ = parse(&p[..n]);
            for bit in 0..8 {
                let mut q = p.clone();
                q[n] ^= 1 << bit;
                let _ = parse(&q);
            }
        }
    }
}
