//! Just enough of the protobuf wire format for the two metadata-exchange messages:
//! varint and length-delimited fields, and skipping the fields a newer peer may add.
//! (Two messages of two scalar fields each do not justify a code generator.)

/// A decoded field value, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (skipped by the messages here).
    Fixed64(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire type 5 (skipped by the messages here).
    Fixed32(u32),
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// Its value.
    pub value: Value<'a>,
}

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some((&b, rest)) = buf.split_first() else {
            return err("truncated varint");
        };
        *buf = rest;
        // The tenth byte may only carry the top bit of a u64.
        if i == 9 && b > 1 {
            return err("varint overflows 64 bits");
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    err("varint longer than 10 bytes")
}

fn fixed<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    if buf.len() < N {
        return err("truncated fixed-width field");
    }
    let (head, rest) = buf.split_at(N);
    *buf = rest;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok(out)
}

fn field<'a>(buf: &mut &'a [u8]) -> Result<Field<'a>, DecodeError> {
    let key = varint(buf)?;
    let number = u32::try_from(key >> 3)
        .ok()
        .filter(|n| (1..=0x1fff_ffff).contains(n));
    let Some(number) = number else {
        return err(format!("invalid field number {}", key >> 3));
    };
    let value = match key & 7 {
        0 => Value::Varint(varint(buf)?),
        1 => Value::Fixed64(u64::from_le_bytes(fixed(buf)?)),
        2 => {
            let len = usize::try_from(varint(buf)?).unwrap_or(usize::MAX);
            if len > buf.len() {
                return err(format!("field {number}: length {len} past the end"));
            }
            let (bytes, rest) = buf.split_at(len);
            *buf = rest;
            Value::Bytes(bytes)
        }
        5 => Value::Fixed32(u32::from_le_bytes(fixed(buf)?)),
        // 3 and 4 are the long-deprecated groups; 6 and 7 do not exist.
        t => return err(format!("field {number}: unsupported wire type {t}")),
    };
    Ok(Field { number, value })
}

/// Decodes every field of `msg`, in order.
pub fn fields(mut msg: &[u8]) -> Result<Vec<Field<'_>>, DecodeError> {
    let mut out = Vec::new();
    while !msg.is_empty() {
        out.push(field(&mut msg)?);
    }
    Ok(out)
}

/// The value of an `enum` field: proto enums are int32, so larger varints wrap.
pub fn enum_value(number: u32, value: Value<'_>) -> Result<i32, DecodeError> {
    match value {
        Value::Varint(v) => Ok(v as i32),
        _ => err(format!("field {number}: expected a varint")),
    }
}

/// The value of a `string` field.
pub fn string_value(number: u32, value: Value<'_>) -> Result<String, DecodeError> {
    match value {
        Value::Bytes(b) => std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError(format!("field {number}: string is not UTF-8"))),
        _ => err(format!(
            "field {number}: expected a length-delimited string"
        )),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends an `enum`/`int32` field (negative values take ten bytes, as in protobuf).
pub fn put_enum(out: &mut Vec<u8>, number: u32, v: i32) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, i64::from(v) as u64);
}

/// Appends a `string` field.
pub fn put_string(out: &mut Vec<u8>, number: u32, s: &str) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_protobuf() {
        let mut out = Vec::new();
        put_enum(&mut out, 1, 1);
        put_string(&mut out, 2, "ab");
        assert_eq!(out, [0x08, 0x01, 0x12, 0x02, b'a', b'b']);
        let mut out = Vec::new();
        put_enum(&mut out, 2, 300);
        assert_eq!(out, [0x10, 0xac, 0x02]);
        let mut out = Vec::new();
        put_enum(&mut out, 1, -1);
        assert_eq!(out.len(), 11);
        assert_eq!(fields(&out).unwrap()[0].value, Value::Varint(u64::MAX));
    }

    #[test]
    fn decodes_and_skips() {
        // 1: varint 150, 9: fixed64, 3: bytes "hi", 4: fixed32.
        let msg = [
            0x08, 0x96, 0x01, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0x1a, 0x02, b'h', b'i', 0x25, 7, 0, 0,
            0,
        ];
        assert_eq!(
            fields(&msg).unwrap(),
            vec![
                Field {
                    number: 1,
                    value: Value::Varint(150)
                },
                Field {
                    number: 9,
                    value: Value::Fixed64(1)
                },
                Field {
                    number: 3,
                    value: Value::Bytes(b"hi")
                },
                Field {
                    number: 4,
                    value: Value::Fixed32(7)
                },
            ]
        );
        assert_eq!(fields(&[]).unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &[0x08][..],         // value missing
            &[0x08, 0x80],       // truncated varint
            &[0x12, 0x05, b'a'], // length past the end
            &[0x0b],             // group
            &[0x0e],             // wire type 6
            &[0x00, 0x01],       // field number 0
            &[0x09, 1, 2, 3],    // truncated fixed64
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // overflow
        ] {
            assert!(fields(bad).is_err(), "{bad:02x?}");
        }
        assert!(string_value(1, Value::Bytes(&[0xff])).is_err());
        assert!(string_value(1, Value::Varint(1)).is_err());
        assert!(enum_value(1, Value::Bytes(b"")).is_err());
        assert_eq!(enum_value(1, Value::Varint(u64::MAX)), Ok(-1));
    }
}
