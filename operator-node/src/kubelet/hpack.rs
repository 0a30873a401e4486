//! HPACK (RFC 7541), just what [`super::authority`] needs: a decoder that keeps a peer's
//! dynamic table across header blocks, and an encoder that never touches the receiver's
//! dynamic table (static-table indexes and literals without indexing only).

use std::collections::VecDeque;

#[path = "hpack_huffman_table.rs"]
mod huffman_table;

/// Why a header block could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block truncated")]
    Truncated,
    #[error("HPACK integer too large")]
    IntegerOverflow,
    #[error("header table index {0} out of range")]
    BadIndex(usize),
    #[error("header table index 0")]
    ZeroIndex,
    #[error("dynamic table size update to {0} exceeds the limit {1}")]
    SizeUpdateTooLarge(usize, usize),
    #[error("dynamic table size update after a header field")]
    SizeUpdateNotFirst,
    #[error("invalid Huffman-coded string: {0}")]
    Huffman(&'static str),
}

/// One decoded header field. `never_indexed` keeps the sender's "never indexed" marking
/// (RFC 7541 §6.2.3) so a re-encoded block carries it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub never_indexed: bool,
}

impl Field {
    pub fn new(name: &[u8], value: &[u8]) -> Self {
        Field { name: name.to_vec(), value: value.to_vec(), never_indexed: false }
    }
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The initial SETTINGS_HEADER_TABLE_SIZE (RFC 7540 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Per-entry overhead counted in the table size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Decodes header blocks from one sender, keeping its dynamic table between blocks.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first (index 62 is `entries[0]`).
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// The largest size a size update may set; it bounds the table's memory.
    size_limit: usize,
}

impl Decoder {
    /// A decoder whose table starts at the default size and may be resized up to `size_limit`.
    pub fn new(size_limit: usize) -> Self {
        Decoder { entries: VecDeque::new(), size: 0, max_size: DEFAULT_TABLE_SIZE.min(size_limit), size_limit }
    }

    /// Entries in the dynamic table (newest first), for tests and logs.
    pub fn table_len(&self) -> usize {
        self.entries.len()
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::new();
        let mut rest = block;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                let (index, n) = decode_integer(rest, 7)?;
                rest = &rest[n..];
                let (name, value) = self.lookup(index)?;
                fields.push(Field { name: name.to_vec(), value: value.to_vec(), never_indexed: false });
            } else if first & 0xc0 == 0x40 {
                let (field, n) = self.decode_literal(rest, 6)?;
                rest = &rest[n..];
                self.insert(field.name.clone(), field.value.clone());
                fields.push(field);
            } else if first & 0xe0 == 0x20 {
                if !fields.is_empty() {
                    return Err(HpackError::SizeUpdateNotFirst);
                }
                let (size, n) = decode_integer(rest, 5)?;
                rest = &rest[n..];
                if size > self.size_limit {
                    return Err(HpackError::SizeUpdateTooLarge(size, self.size_limit));
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // 0000xxxx without indexing, 0001xxxx never indexed: both with a 4-bit prefix.
                let (mut field, n) = self.decode_literal(rest, 4)?;
                rest = &rest[n..];
                field.never_indexed = first & 0x10 != 0;
                fields.push(field);
            }
        }
        Ok(fields)
    }

    fn decode_literal(&self, buf: &[u8], prefix: u8) -> Result<(Field, usize), HpackError> {
        let (index, mut used) = decode_integer(buf, prefix)?;
        let name = if index == 0 {
            let (name, n) = decode_string(&buf[used..])?;
            used += n;
            name
        } else {
            self.lookup(index)?.0.to_vec()
        };
        let (value, n) = decode_string(&buf[used..])?;
        used += n;
        Ok((Field { name, value, never_indexed: false }, used))
    }

    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::ZeroIndex),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((name.as_bytes(), value.as_bytes()))
            }
            _ => self.entries.get(index - 62).map(|(n, v)| (&n[..], &v[..])).ok_or(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let entry_size = name.len() + value.len() + ENTRY_OVERHEAD;
        if entry_size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - entry_size);
        self.size += entry_size;
        self.entries.push_front((name, value));
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some((name, value)) = self.entries.pop_back() else { break };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// Encodes `fields` without adding anything to the receiver's dynamic table: an exact static
/// match as an index, otherwise a literal without indexing (or never indexed, as marked) with
/// a static name index where there is one. Strings are sent raw (no Huffman).
pub fn encode_without_indexing(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        let exact = STATIC_TABLE.iter().position(|(n, v)| n.as_bytes() == field.name && v.as_bytes() == field.value);
        if let (Some(i), false) = (exact, field.never_indexed) {
            encode_integer(&mut out, 0x80, 7, i + 1);
            continue;
        }
        let flags = if field.never_indexed { 0x10 } else { 0x00 };
        match STATIC_TABLE.iter().position(|(n, _)| n.as_bytes() == field.name) {
            Some(i) => encode_integer(&mut out, flags, 4, i + 1),
            None => {
                out.push(flags);
                encode_string(&mut out, &field.name);
            }
        }
        encode_string(&mut out, &field.value);
    }
    out
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: `value` in a `prefix`-bit prefix of a first byte carrying `flags`.
pub fn encode_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// RFC 7541 §5.1; values above 2^32 are refused (no header block needs them).
fn decode_integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), HpackError> {
    let max = (1u64 << prefix) - 1;
    let first = *buf.first().ok_or(HpackError::Truncated)?;
    let mut value = u64::from(first) & max;
    if value < max {
        return Ok((value as usize, 1));
    }
    let mut shift = 0u32;
    for (i, &byte) in buf[1..].iter().enumerate() {
        value += u64::from(byte & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return Ok((value as usize, i + 2));
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
    Err(HpackError::Truncated)
}

/// RFC 7541 §5.2: a length-prefixed string, Huffman-coded when the H bit is set.
fn decode_string(buf: &[u8]) -> Result<(Vec<u8>, usize), HpackError> {
    let huffman = buf.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, used) = decode_integer(buf, 7)?;
    let raw = buf.get(used..used + len).ok_or(HpackError::Truncated)?;
    let s = if huffman { huffman_decode(raw)? } else { raw.to_vec() };
    Ok((s, used + len))
}

/// A binary tree of the Huffman code: `node[bit]` is another node's index, or a leaf
/// `LEAF | symbol`.
const LEAF: u16 = 0x8000;

fn huffman_tree() -> &'static [[u16; 2]] {
    static TREE: std::sync::OnceLock<Vec<[u16; 2]>> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let mut tree: Vec<[u16; 2]> = vec![[0, 0]];
        for (symbol, &(code, len)) in huffman_table::CODES.iter().enumerate() {
            let mut node = 0usize;
            for bit_pos in (0..len).rev() {
                let bit = ((code >> bit_pos) & 1) as usize;
                if bit_pos == 0 {
                    tree[node][bit] = LEAF | symbol as u16;
                } else {
                    if tree[node][bit] == 0 {
                        tree.push([0, 0]);
                        tree[node][bit] = (tree.len() - 1) as u16;
                    }
                    node = tree[node][bit] as usize;
                }
            }
        }
        tree
    })
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2): EOS inside the string and padding that is
/// longer than 7 bits or not all ones are errors.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, HpackError> {
    let tree = huffman_tree();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let mut node = 0usize;
    let mut pending_bits = 0u32;
    let mut pending_all_ones = true;
    for &byte in input {
        for bit_pos in (0..8).rev() {
            let bit = (byte >> bit_pos) & 1;
            pending_bits += 1;
            pending_all_ones &= bit == 1;
            let next = tree[node][bit as usize];
            if next & LEAF != 0 {
                let symbol = next & !LEAF;
                if symbol == 256 {
                    return Err(HpackError::Huffman("EOS symbol in string"));
                }
                out.push(symbol as u8);
                node = 0;
                pending_bits = 0;
                pending_all_ones = true;
            } else {
                node = next as usize;
            }
        }
    }
    if pending_bits > 7 {
        return Err(HpackError::Huffman("padding longer than 7 bits"));
    }
    if !pending_all_ones {
        return Err(HpackError::Huffman("padding is not a prefix of EOS"));
    }
    Ok(out)
}

/// Huffman-codes `input` (the way grpc-go sends values), for tests that play the client.
#[cfg(test)]
pub fn huffman_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &byte in input {
        let (code, len) = huffman_table::CODES[byte as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | ((1u64 << (8 - bits)) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn pairs(fields: &[Field]) -> Vec<(String, String)> {
        fields.iter().map(|f| (String::from_utf8_lossy(&f.name).into_owned(), String::from_utf8_lossy(&f.value).into_owned())).collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn integers_round_trip_and_match_rfc_examples() {
        // RFC 7541 C.1.1–C.1.3.
        let mut out = Vec::new();
        encode_integer(&mut out, 0, 5, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_integer(&mut out, 0, 8, 42);
        assert_eq!(out, [0x2a]);
        assert_eq!(decode_integer(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3)));
        for value in [0, 1, 14, 15, 16, 127, 128, 255, 16_384, 1 << 24, u32::MAX as usize] {
            for prefix in [4, 5, 6, 7] {
                let mut out = Vec::new();
                encode_integer(&mut out, 0, prefix, value);
                assert_eq!(decode_integer(&out, prefix), Ok((value, out.len())), "{value} in {prefix} bits");
            }
        }
        assert_eq!(decode_integer(&[0x1f, 0x9a], 5), Err(HpackError::Truncated));
        assert_eq!(decode_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 5), Err(HpackError::IntegerOverflow));
    }

    #[test]
    fn huffman_matches_rfc_examples_and_round_trips_every_byte() {
        // RFC 7541 C.4.1 "www.example.com", C.4.3 "custom-value".
        assert_eq!(huffman_encode(b"www.example.com"), hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
        assert_eq!(huffman_decode(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(), b"www.example.com");
        assert_eq!(huffman_decode(&hex("25a8 49e9 5bb8 e8b4 bf")).unwrap(), b"custom-value");
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(huffman_decode(&huffman_encode(&all)).unwrap(), all);
        let path = b"/var/lib/kubelet/plugins_registry/gpu.nvidia.com-reg.sock";
        assert_eq!(huffman_decode(&huffman_encode(path)).unwrap(), path);
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        // '0' is 00000 (5 bits): three padding bits of zeros are not an EOS prefix.
        assert_eq!(huffman_decode(&[0x00]), Err(HpackError::Huffman("padding is not a prefix of EOS")));
        // Eight or more one bits of padding.
        assert_eq!(huffman_decode(&[0x07, 0xff]), Err(HpackError::Huffman("padding longer than 7 bits")));
        // The full 30-bit EOS code.
        assert_eq!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc]), Err(HpackError::Huffman("EOS symbol in string")));
    }

    /// RFC 7541 C.4: three requests with Huffman coding through one decoder, whose dynamic
    /// table carries entries from one block to the next.
    #[test]
    fn decodes_rfc_request_sequence_keeping_the_dynamic_table() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let first = decoder.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(pairs(&first), owned(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]));
        assert_eq!(decoder.table_len(), 1);
        let second = decoder.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            pairs(&second),
            owned(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = decoder.decode(&hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")).unwrap();
        assert_eq!(
            pairs(&third),
            owned(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(decoder.table_len(), 3);
    }

    /// RFC 7541 C.6 (responses, table size 256): entries are evicted as the table fills.
    #[test]
    fn evicts_entries_when_the_table_is_full() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        decoder.decode(&[0x3f, 0xe1, 0x01]).unwrap(); // size update to 256
        decoder.decode(&hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3")).unwrap();
        assert_eq!(decoder.table_len(), 4);
        let second = decoder.decode(&hex("4883 640e ffc1 c0bf")).unwrap();
        assert_eq!(pairs(&second)[0], (":status".into(), "307".into()));
        assert_eq!(pairs(&second)[3], ("location".into(), "https://www.example.com".into()));
        assert_eq!(decoder.table_len(), 4, "one evicted, one added");
        // A size update to 0 empties the table; the next block can no longer refer to it.
        decoder.decode(&[0x20]).unwrap();
        assert_eq!(decoder.table_len(), 0);
        assert_eq!(decoder.decode(&[0xbe]), Err(HpackError::BadIndex(62)));
    }

    #[test]
    fn rejects_malformed_blocks() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        assert_eq!(decoder.decode(&[0x80]), Err(HpackError::ZeroIndex));
        assert_eq!(decoder.decode(&[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(decoder.decode(&[0x41, 0x05, b'a']), Err(HpackError::Truncated));
        assert_eq!(decoder.decode(&[0x82, 0x20]), Err(HpackError::SizeUpdateNotFirst));
        assert_eq!(decoder.decode(&[0x3f, 0xe1, 0xff, 0x03]), Err(HpackError::SizeUpdateTooLarge(65_536, DEFAULT_TABLE_SIZE)));
        assert_eq!(decoder.decode(&[0x00, 0x81, 0x00, 0x00]), Err(HpackError::Huffman("padding is not a prefix of EOS")));
        // Truncated input at every length never panics.
        let block = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
        for end in 0..block.len() {
            let _ = Decoder::new(DEFAULT_TABLE_SIZE).decode(&block[..end]);
        }
    }

    #[test]
    fn encoding_without_indexing_round_trips_and_leaves_the_receiver_table_empty() {
        let fields = vec![
            Field::new(b":method", b"POST"),
            Field::new(b":scheme", b"http"),
            Field::new(b":path", b"/pluginregistration.Registration/GetInfo"),
            Field::new(b":authority", b"localhost"),
            Field::new(b"content-type", b"application/grpc"),
            Field::new(b"te", b"trailers"),
            Field { name: b"authorization".to_vec(), value: b"secret".to_vec(), never_indexed: true },
        ];
        let block = encode_without_indexing(&fields);
        assert_eq!(&block[..2], [0x83, 0x86], "exact static matches are indexed");
        let mut receiver = Decoder::new(DEFAULT_TABLE_SIZE);
        assert_eq!(receiver.decode(&block).unwrap(), fields);
        assert_eq!(receiver.table_len(), 0);
    }
}
