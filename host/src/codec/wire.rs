//! Component values <-> compact binary, directed by types on both sides.
//!
//! Both ends of a remote link know the function's types (links are
//! type-checked before anything serves), so values carry no type tags:
//! integers are LEB128 varints (signed ones zigzagged), floats little-endian,
//! strings and lists length-prefixed, records and tuples their fields in order,
//! variants and enums a case index, options and results one discriminant
//! byte, flags a little-endian bitset. A message starts with [`VERSION`].
//! Specified in `docs/wire.md`.
//!
//! The decoder trusts nothing: every length is checked against the bytes
//! left before anything is allocated, and every allocation is charged to a
//! budget of [`MEMORY_PER_BYTE`] bytes per message byte plus
//! [`MEMORY_FLOOR`] before it is made. A component value costs more than
//! its bytes (each `Val` is a few words, each set flag or enum case a
//! `String` of its name), so without the budget 2 bytes of flags could
//! become 400 bytes of values. Arbitrary input fails with a [`WireError`],
//! never a panic, and never holds more than its budget.

use wasmtime::component::Val;
use wasmtime::component::types::Type;

/// The format version, the first byte of every message.
pub const VERSION: u8 = 1;

/// Bytes that do not decode as the expected types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wire decode error at byte {offset}: {message}")]
pub struct WireError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub message: String,
}

/// Decodes one message holding values of `types`, in order. Trailing bytes
/// are an error.
pub fn decode(types: &[Type], bytes: &[u8]) -> Result<Vec<Val>, WireError> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        budget: MEMORY_PER_BYTE.saturating_mul(bytes.len()).saturating_add(MEMORY_FLOOR),
    };
    let version = reader.byte()?;
    if version != VERSION {
        return Err(reader.error(format!(
            "unsupported wire version {version} (this host speaks {VERSION})"
        )));
    }
    let values = types.iter().map(|t| reader.val(t)).collect::<Result<Vec<_>, _>>()?;
    if reader.pos != bytes.len() {
        return Err(reader.error(format!("{} trailing byte(s)", bytes.len() - reader.pos)));
    }
    Ok(values)
}

fn varint(mut x: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn len(n: usize, out: &mut Vec<u8>) {
    varint(n as u64, out);
}

fn unencodable(what: &str) -> WireError {
    WireError {
        offset: 0,
        message: format!("{what} cannot cross a remote link"),
    }
}

/// Encodes `values` of `types` as one message. Variants, enums and flags are
/// written by position, which only the type knows.
pub fn encode(types: &[Type], values: &[Val]) -> Result<Vec<u8>, WireError> {
    if types.len() != values.len() {
        return Err(unencodable("a value list of the wrong length"));
    }
    let mut out = vec![VERSION];
    for (ty, value) in types.iter().zip(values) {
        encode_with(ty, value, &mut out)?;
    }
    Ok(out)
}

fn mismatch(ty: &Type, value: &Val) -> WireError {
    WireError {
        offset: 0,
        message: format!("value {value:?} does not match type {}", super::types::describe(ty)),
    }
}

fn encode_with(ty: &Type, value: &Val, out: &mut Vec<u8>) -> Result<(), WireError> {
    match (ty, value) {
        (Type::List(l), Val::List(items)) => {
            len(items.len(), out);
            let elem = l.ty();
            for item in items {
                encode_with(&elem, item, out)?;
            }
        }
        (Type::Map(m), Val::Map(pairs)) => {
            len(pairs.len(), out);
            let (kt, vt) = (m.key(), m.value());
            for (k, v) in pairs {
                encode_with(&kt, k, out)?;
                encode_with(&vt, v, out)?;
            }
        }
        (Type::Record(r), Val::Record(fields)) => {
            for (field, (_, v)) in r.fields().zip(fields) {
                encode_with(&field.ty, v, out)?;
            }
        }
        (Type::Tuple(t), Val::Tuple(items)) => {
            for (ty, v) in t.types().zip(items) {
                encode_with(&ty, v, out)?;
            }
        }
        (Type::Variant(v), Val::Variant(name, payload)) => {
            let (index, case) = v
                .cases()
                .enumerate()
                .find(|(_, c)| c.name == name)
                .ok_or_else(|| mismatch(ty, value))?;
            len(index, out);
            match (case.ty, payload) {
                (Some(t), Some(p)) => encode_with(&t, p, out)?,
                (None, None) => {}
                _ => return Err(mismatch(ty, value)),
            }
        }
        (Type::Enum(e), Val::Enum(name)) => {
            let index = e.names().position(|n| n == name).ok_or_else(|| mismatch(ty, value))?;
            len(index, out);
        }
        (Type::Flags(f), Val::Flags(set)) => {
            let names: Vec<&str> = f.names().collect();
            let mut bits = vec![0u8; names.len().div_ceil(8)];
            for flag in set {
                let i = names
                    .iter()
                    .position(|n| n == flag)
                    .ok_or_else(|| mismatch(ty, value))?;
                bits[i / 8] |= 1 << (i % 8);
            }
            out.extend_from_slice(&bits);
        }
        (Type::Option(o), Val::Option(v)) => match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                encode_with(&o.ty(), v, out)?;
            }
        },
        (Type::Result(r), Val::Result(v)) => {
            let (tag, payload, side) = match v {
                Ok(p) => (0, p, r.ok()),
                Err(p) => (1, p, r.err()),
            };
            out.push(tag);
            match (side, payload) {
                (Some(t), Some(p)) => encode_with(&t, p, out)?,
                (None, None) => {}
                _ => return Err(mismatch(ty, value)),
            }
        }
        (Type::Bool, Val::Bool(b)) => out.push(u8::from(*b)),
        (Type::S8, Val::S8(x)) => out.push(*x as u8),
        (Type::U8, Val::U8(x)) => out.push(*x),
        (Type::S16, Val::S16(x)) => varint(zigzag(i64::from(*x)), out),
        (Type::U16, Val::U16(x)) => varint(u64::from(*x), out),
        (Type::S32, Val::S32(x)) => varint(zigzag(i64::from(*x)), out),
        (Type::U32, Val::U32(x)) => varint(u64::from(*x), out),
        (Type::S64, Val::S64(x)) => varint(zigzag(*x), out),
        (Type::U64, Val::U64(x)) => varint(*x, out),
        (Type::Float32, Val::Float32(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (Type::Float64, Val::Float64(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (Type::Char, Val::Char(c)) => varint(u64::from(u32::from(*c)), out),
        (Type::String, Val::String(s)) => {
            len(s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        (Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext, _) => {
            return Err(unencodable("a resource, future or stream"));
        }
        _ => return Err(mismatch(ty, value)),
    }
    Ok(())
}

/// The most memory decoding may allocate per message byte: a `list<u8>`
/// takes one `Val` (40 bytes) per byte, a `list<enum>` that plus the case
/// name. A message needing more is refused, not decoded.
pub const MEMORY_PER_BYTE: usize = 96;
/// What any message may allocate beyond [`MEMORY_PER_BYTE`]: room for the
/// field names of a small record, or a few set flags.
pub const MEMORY_FLOOR: usize = 4096;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Bytes of memory this message may still allocate.
    budget: usize,
}

/// Most elements one list may claim: a bound for zero-sized element types,
/// whose count is not limited by the bytes left.
const MAX_ELEMENTS: u64 = 1 << 20;

impl Reader<'_> {
    fn error(&self, message: String) -> WireError {
        WireError {
            offset: self.pos,
            message,
        }
    }

    /// Charges `n` bytes of memory to this message, before they are allocated.
    fn charge(&mut self, n: usize) -> Result<(), WireError> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            self.error(format!(
                "the values need more memory than a message of {} bytes may take \
                 ({MEMORY_PER_BYTE} per byte plus {MEMORY_FLOOR})",
                self.bytes.len()
            ))
        })?;
        Ok(())
    }

    /// Charges `count` items of `T`.
    fn charge_items<T>(&mut self, count: usize) -> Result<(), WireError> {
        self.charge(count.saturating_mul(std::mem::size_of::<T>()))
    }

    /// An owned copy of a type's name, charged.
    fn name(&mut self, name: &str) -> Result<String, WireError> {
        self.charge(name.len())?;
        Ok(name.to_string())
    }

    /// A boxed value, charged.
    fn boxed(&mut self, ty: &Type) -> Result<Box<Val>, WireError> {
        self.charge_items::<Val>(1)?;
        Ok(Box::new(self.val(ty)?))
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.error("unexpected end of message".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.bytes.len() - self.pos < n {
            return Err(self.error(format!("needs {n} byte(s), {} left", self.bytes.len() - self.pos)));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut x: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(self.error("varint overflows 64 bits".into()));
            }
            x |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(self.error("varint longer than 10 bytes".into()))
    }

    fn int<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T, WireError> {
        let x = self.varint()?;
        T::try_from(x).map_err(|_| self.error(format!("{x} out of range for {what}")))
    }

    fn sint<T: TryFrom<i64>>(&mut self, what: &str) -> Result<T, WireError> {
        let x = unzigzag(self.varint()?);
        T::try_from(x).map_err(|_| self.error(format!("{x} out of range for {what}")))
    }

    /// A count of items that each take at least `min_size` bytes.
    fn count(&mut self, min_size: usize) -> Result<usize, WireError> {
        let n = self.varint()?;
        let left = (self.bytes.len() - self.pos) as u64;
        // Items of size zero take no bytes, so only a cap bounds them.
        if min_size == 0 && n > MAX_ELEMENTS {
            return Err(self.error(format!("a length of {n} exceeds {MAX_ELEMENTS} zero-size items")));
        }
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.error(format!("a length of {n} does not fit the {left} byte(s) left")));
        }
        Ok(n as usize)
    }

    fn index(&mut self, cases: usize, what: &str) -> Result<usize, WireError> {
        let i = self.varint()?;
        if i >= cases as u64 {
            return Err(self.error(format!("{what} index {i} out of range ({cases} cases)")));
        }
        Ok(i as usize)
    }

    fn val(&mut self, ty: &Type) -> Result<Val, WireError> {
        Ok(match ty {
            Type::Bool => match self.byte()? {
                0 => Val::Bool(false),
                1 => Val::Bool(true),
                b => return Err(self.error(format!("bool byte {b}"))),
            },
            Type::S8 => Val::S8(self.byte()? as i8),
            Type::U8 => Val::U8(self.byte()?),
            Type::S16 => Val::S16(self.sint("s16")?),
            Type::U16 => Val::U16(self.int("u16")?),
            Type::S32 => Val::S32(self.sint("s32")?),
            Type::U32 => Val::U32(self.int("u32")?),
            Type::S64 => Val::S64(unzigzag(self.varint()?)),
            Type::U64 => Val::U64(self.varint()?),
            Type::Float32 => Val::Float32(f32::from_le_bytes(self.array()?)),
            Type::Float64 => Val::Float64(f64::from_le_bytes(self.array()?)),
            Type::Char => {
                let x: u32 = self.int("char")?;
                Val::Char(char::from_u32(x).ok_or_else(|| self.error(format!("{x:#x} is not a char")))?)
            }
            Type::String => {
                let n = self.count(1)?;
                self.charge(n)?;
                let start = self.pos;
                let bytes = self.take(n)?;
                let s = std::str::from_utf8(bytes).map_err(|e| WireError {
                    offset: start,
                    message: format!("string is not UTF-8: {e}"),
                })?;
                Val::String(s.to_string())
            }
            Type::List(l) => {
                let elem = l.ty();
                let n = self.count(min_size(&elem))?;
                self.charge_items::<Val>(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.val(&elem)?);
                }
                Val::List(items)
            }
            Type::Map(m) => {
                let (kt, vt) = (m.key(), m.value());
                let n = self.count(min_size(&kt) + min_size(&vt))?;
                self.charge_items::<(Val, Val)>(n)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push((self.val(&kt)?, self.val(&vt)?));
                }
                Val::Map(pairs)
            }
            Type::Record(r) => {
                self.charge_items::<(String, Val)>(r.fields().len())?;
                let mut fields = Vec::with_capacity(r.fields().len());
                for f in r.fields() {
                    fields.push((self.name(f.name)?, self.val(&f.ty)?));
                }
                Val::Record(fields)
            }
            Type::Tuple(t) => {
                self.charge_items::<Val>(t.types().len())?;
                let mut items = Vec::with_capacity(t.types().len());
                for t in t.types() {
                    items.push(self.val(&t)?);
                }
                Val::Tuple(items)
            }
            Type::Variant(v) => {
                let i = self.index(v.cases().len(), "variant case")?;
                let case = v
                    .cases()
                    .nth(i)
                    .ok_or_else(|| self.error(format!("no variant case {i}")))?;
                let name = self.name(case.name)?;
                let payload = match &case.ty {
                    Some(t) => Some(self.boxed(t)?),
                    None => None,
                };
                Val::Variant(name, payload)
            }
            Type::Enum(e) => {
                let i = self.index(e.names().len(), "enum case")?;
                let name = e
                    .names()
                    .nth(i)
                    .ok_or_else(|| self.error(format!("no enum case {i}")))?;
                Val::Enum(self.name(name)?)
            }
            Type::Flags(f) => {
                let count = f.names().len();
                let start = self.pos;
                self.take(count.div_ceil(8))?;
                let all = self.bytes;
                let bits = &all[start..self.pos];
                let unused = count % 8;
                if unused != 0 && bits.last().is_some_and(|b| b >> unused != 0) {
                    return Err(self.error("flags set beyond the last flag".into()));
                }
                let set = bits.iter().map(|b| b.count_ones() as usize).sum();
                self.charge_items::<String>(set)?;
                let mut names = Vec::with_capacity(set);
                for (i, name) in f.names().enumerate() {
                    if bits[i / 8] & (1 << (i % 8)) != 0 {
                        names.push(self.name(name)?);
                    }
                }
                Val::Flags(names)
            }
            Type::Option(o) => match self.byte()? {
                0 => Val::Option(None),
                1 => Val::Option(Some(self.boxed(&o.ty())?)),
                b => return Err(self.error(format!("option discriminant {b}"))),
            },
            Type::Result(r) => {
                let (ok, ty) = match self.byte()? {
                    0 => (true, r.ok()),
                    1 => (false, r.err()),
                    b => return Err(self.error(format!("result discriminant {b}"))),
                };
                let payload = match ty {
                    Some(t) => Some(self.boxed(&t)?),
                    None => None,
                };
                Val::Result(if ok { Ok(payload) } else { Err(payload) })
            }
            Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
                return Err(self.error("resources and streams cannot cross a remote link".into()));
            }
            Type::FixedLengthList(_) => {
                return Err(self.error("fixed-length lists are not supported on the wire yet".into()));
            }
        })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// The fewest bytes a value of `ty` can take (0 for empty records/tuples).
fn min_size(ty: &Type) -> usize {
    match ty {
        Type::Float32 => 4,
        Type::Float64 => 8,
        Type::Record(r) => r.fields().map(|f| min_size(&f.ty)).sum(),
        Type::Tuple(t) => t.types().map(|t| min_size(&t)).sum(),
        Type::Flags(f) => f.names().len().div_ceil(8),
        _ => 1,
    }
}
