//! Hand-written dag-pb and UnixFS protobuf encoding, byte for byte as Kubo writes it.
//!
//! dag-pb `PBNode` (canonical form): every `Links` (field 2) before `Data` (field 1).
//! A `PBLink` is `Hash` (1, CID bytes), `Name` (2, always written, empty here), `Tsize`
//! (3, the block's size plus its descendants'). UnixFS `Data` (proto2): `Type` (1),
//! `Data` (2, omitted when empty), `filesize` (3), `blocksizes` (4, repeated, unpacked).

use crate::cid::Cid;

/// UnixFS `Type = File`.
const UNIXFS_TYPE_FILE: u64 = 2;

const WIRE_VARINT: u64 = 0;
const WIRE_LEN: u64 = 2;

/// Longest varint (u64) in bytes.
const VARINT_MAX_LEN: usize = 10;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_key(out, field, WIRE_VARINT);
    put_varint(out, value);
}

/// A link from a parent node to a child, with what the parent records about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildLink {
    /// The child's CID.
    pub cid: Cid,
    /// The child's block size plus all its descendants' (dag-pb `Tsize`).
    pub tsize: u64,
    /// File bytes under the child (UnixFS `blocksizes` entry).
    pub file_bytes: u64,
}

/// A dag-pb leaf wrapping `chunk` as UnixFS file data (CIDv0 leaves; also the empty file).
pub fn encode_file_leaf(chunk: &[u8]) -> Vec<u8> {
    let mut unixfs = Vec::with_capacity(chunk.len() + 2 * VARINT_MAX_LEN + 4);
    put_varint_field(&mut unixfs, 1, UNIXFS_TYPE_FILE);
    if !chunk.is_empty() {
        put_bytes_field(&mut unixfs, 2, chunk);
    }
    put_varint_field(&mut unixfs, 3, chunk.len() as u64);
    let mut node = Vec::with_capacity(unixfs.len() + VARINT_MAX_LEN + 1);
    put_bytes_field(&mut node, 1, &unixfs);
    node
}

/// A dag-pb parent node over `children`, in order.
pub fn encode_file_parent(children: &[ChildLink]) -> Vec<u8> {
    assert!(!children.is_empty(), "a parent node has at least one child");
    let file_bytes: u64 = children.iter().map(|c| c.file_bytes).sum();
    let mut node = Vec::with_capacity(children.len() * 48 + children.len() * 4 + 16);
    let mut link = Vec::with_capacity(48);
    for child in children {
        link.clear();
        put_bytes_field(&mut link, 1, &child.cid.to_bytes());
        put_bytes_field(&mut link, 2, b"");
        put_varint_field(&mut link, 3, child.tsize);
        put_bytes_field(&mut node, 2, &link);
    }
    let mut unixfs = Vec::with_capacity(children.len() * 4 + 16);
    put_varint_field(&mut unixfs, 1, UNIXFS_TYPE_FILE);
    put_varint_field(&mut unixfs, 3, file_bytes);
    for child in children {
        put_varint_field(&mut unixfs, 4, child.file_bytes);
    }
    put_bytes_field(&mut node, 1, &unixfs);
    node
}

/// A dag-pb block that is not well-formed for this crate's purposes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed dag-pb node: {0}")]
pub struct DecodeError(&'static str);

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for (index, &byte) in self.bytes.iter().enumerate().take(VARINT_MAX_LEN) {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[index + 1..];
                return Ok(value);
            }
        }
        Err(DecodeError("bad varint"))
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError("length overflow"))?;
        if len > self.bytes.len() {
            return Err(DecodeError("truncated field"));
        }
        let (field, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(field)
    }

    /// The next `(field, wire type)`, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, DecodeError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, key & 7)))
    }

    fn skip(&mut self, wire: u64) -> Result<(), DecodeError> {
        match wire {
            WIRE_VARINT => self.varint().map(|_| ()),
            WIRE_LEN => self.length_delimited().map(|_| ()),
            _ => Err(DecodeError("unsupported wire type")),
        }
    }
}

/// A decoded UnixFS file node: its children and its inline data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DecodedNode<'a> {
    /// Child CIDs in order.
    pub links: Vec<Cid>,
    /// UnixFS `Data` bytes (file bytes held by this node itself; empty for parents).
    pub data: &'a [u8],
}

/// Decodes a dag-pb node's links and its UnixFS inline data.
pub fn decode_node(block: &[u8]) -> Result<DecodedNode<'_>, DecodeError> {
    let mut node = DecodedNode::default();
    let mut reader = Reader { bytes: block };
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (2, WIRE_LEN) => node.links.push(decode_link(reader.length_delimited()?)?),
            (1, WIRE_LEN) => node.data = decode_unixfs_data(reader.length_delimited()?)?,
            _ => reader.skip(wire)?,
        }
    }
    Ok(node)
}

fn decode_link(bytes: &[u8]) -> Result<Cid, DecodeError> {
    let mut reader = Reader { bytes };
    let mut cid = None;
    while let Some((field, wire)) = reader.key()? {
        if (field, wire) == (1, WIRE_LEN) {
            let bytes = reader.length_delimited()?;
            cid = Some(Cid::from_bytes(bytes).map_err(|_| DecodeError("unsupported link CID"))?);
        } else {
            reader.skip(wire)?;
        }
    }
    cid.ok_or(DecodeError("link without a hash"))
}

fn decode_unixfs_data(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let mut reader = Reader { bytes };
    let mut data: &[u8] = &[];
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, WIRE_VARINT) => {
                if reader.varint()? != UNIXFS_TYPE_FILE {
                    return Err(DecodeError("UnixFS node is not a file"));
                }
            }
            (2, WIRE_LEN) => data = reader.length_delimited()?,
            _ => reader.skip(wire)?,
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{CidVersion, Codec};

    #[test]
    fn leaf_bytes_match_kubo() {
        // QmT78z…: 0a 12 | 08 02 12 0c "hello world\n" 18 0c
        let mut expected = vec![0x0a, 0x12, 0x08, 0x02, 0x12, 0x0c];
        expected.extend_from_slice(b"hello world\n");
        expected.extend_from_slice(&[0x18, 0x0c]);
        assert_eq!(encode_file_leaf(b"hello world\n"), expected);
        let decoded = decode_node(&expected).unwrap();
        assert!(decoded.links.is_empty());
        assert_eq!(decoded.data, b"hello world\n");
    }

    #[test]
    fn parent_round_trips_links() {
        let a = Cid::for_block(CidVersion::V1, Codec::Raw, b"a");
        let b = Cid::for_block(CidVersion::V1, Codec::Raw, b"bb");
        let node = encode_file_parent(&[
            ChildLink {
                cid: a,
                tsize: 1,
                file_bytes: 1,
            },
            ChildLink {
                cid: b,
                tsize: 2,
                file_bytes: 2,
            },
        ]);
        let decoded = decode_node(&node).unwrap();
        assert_eq!(decoded.links, vec![a, b]);
        assert!(decoded.data.is_empty());
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let node = encode_file_leaf(b"hello world\n");
        for len in 1..node.len() {
            let _ = decode_node(&node[..len]);
        }
        assert!(decode_node(&node[..5]).is_err());
    }
}
