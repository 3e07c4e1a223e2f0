//! Reader for GGUF files (versions 2 and 3, little-endian), the llama.cpp / ggml weight format.
//!
//! Layout: magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata count, the metadata
//! key/value pairs, one info record per tensor (name, dims in ggml order — fastest first —, ggml
//! type, offset relative to the data section), padding to `general.alignment` (default 32), then
//! the tensor data, each tensor starting at a multiple of the alignment.
//!
//! As in `safetensors`, every count and length the header claims is checked against the bytes that
//! are actually left in the file *before* it is used to allocate or index, so a corrupt, truncated
//! or hostile file fails with a message naming the cause instead of panicking or exhausting memory.
//!
//! Tensors come out through [`WeightSource`] as f32: F32 data is memory-mapped (no copy), F16/BF16
//! are converted and quantized blocks dequantized exactly like ggml's reference `dequantize_row_*`
//! ([`GgmlType::to_f32`]). The quantized block types, their sizes and dequantizers are
//! [`QuantFormat`]'s: the reader only maps a file's type tag onto one. [`GgufFile::raw`] hands out
//! the stored bytes for kernels that work on the quantized blocks directly.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;

use super::WeightSource;
use crate::error::{Error, Result};
use crate::format_err;
use crate::kernels::quant::QuantFormat;
use crate::tensor::Tensor;

const MAGIC: &[u8; 4] = b"GGUF";
/// The alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Real files nest arrays at most one level deep; the limit only bounds recursion on hostile input.
const MAX_ARRAY_DEPTH: usize = 16;
/// Most metadata keys a file may have. Real files have a few dozen (per-layer values are arrays,
/// not keys); the bound keeps the key index, and the dict Python builds from it, a few MB whatever
/// the file claims.
pub const MAX_METADATA_KEYS: u64 = 1 << 16;
/// Most tensors a file may have. The largest real files have a few thousand (experts are stacked
/// into one tensor per layer); each costs ~150 bytes of index, so this bounds the index too.
pub const MAX_TENSORS: u64 = 1 << 16;
/// Smallest possible encoding of one metadata pair: empty key (`u64` length), `u32` type, 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible tensor info: empty name, `u32` n_dims = 0, `u32` type, `u64` offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// Blocks dequantized per rayon task: big enough to amortise scheduling, small enough to balance.
const BLOCKS_PER_TASK: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Metadata values
// ---------------------------------------------------------------------------------------------

/// One metadata value, borrowed from the file's mapping. The variants follow GGUF's value types
/// (ids in comments). Strings are not copied and arrays stay spans of the file
/// ([`MetaArray`]) whose elements are decoded only when read, so the metadata costs memory in
/// proportion to the number of keys, never to the size of the values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetaValue<'a> {
    U8(u8),               // 0
    I8(i8),               // 1
    U16(u16),             // 2
    I16(i16),             // 3
    U32(u32),             // 4
    I32(i32),             // 5
    F32(f32),             // 6
    Bool(bool),           // 7
    String(&'a str),      // 8
    Array(MetaArray<'a>), // 9: homogeneous, possibly nested
    U64(u64),             // 10
    I64(i64),             // 11
    F64(f64),             // 12
}

/// An array value: its element type, its length and its elements' bytes in the file. [`GgufFile`]
/// validated every element when it opened the file, so reading them again cannot fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetaArray<'a> {
    elem: u32,
    len: usize,
    bytes: &'a [u8],
}

impl<'a> MetaArray<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// GGUF's id for the elements' type (`gguf_type`).
    pub fn elem_type(&self) -> u32 {
        self.elem
    }

    /// A short name of the elements' type (`u8`, `string`, ...), for messages.
    pub fn elem_type_name(&self) -> &'static str {
        value_type_name(self.elem).unwrap_or("?")
    }

    /// The elements' bytes (`len × width`, little-endian) when they are numbers or bools, which
    /// have one fixed width: such arrays can be handed out whole, without decoding each element.
    pub fn fixed_width(&self) -> Option<(usize, &'a [u8])> {
        fixed_value_bytes(self.elem).map(|w| (w, self.bytes))
    }

    /// Element `i`: found directly for fixed-width elements, by walking the ones before it for
    /// strings and nested arrays.
    pub fn get(&self, i: usize) -> Option<MetaValue<'a>> {
        if i >= self.len {
            return None;
        }
        match fixed_value_bytes(self.elem) {
            Some(w) => {
                let mut r = Reader {
                    buf: &self.bytes[i * w..(i + 1) * w],
                    pos: 0,
                };
                r.value(self.elem, 0).ok()
            }
            None => self.iter().nth(i),
        }
    }

    /// The elements in order, each decoded when reached.
    pub fn iter(&self) -> impl Iterator<Item = MetaValue<'a>> + 'a {
        let (elem, mut r) = (
            self.elem,
            Reader {
                buf: self.bytes,
                pos: 0,
            },
        );
        // `parse` decoded every element once already, so this cannot stop early.
        (0..self.len).map_while(move |_| r.value(elem, 0).ok())
    }
}

impl<'a> MetaValue<'a> {
    /// The value as an unsigned integer: any integer type whose value is non-negative. The spec
    /// names a type for each key, but writers disagree (u32 vs u64 vs i32), so callers should not
    /// care which integer type a file used.
    pub fn as_u64(self) -> Option<u64> {
        match self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer: any integer type whose value fits in `i64`.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float: either float type, or any integer type (e.g. a `rope.freq_base`
    /// written as an integer).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(self) -> Option<bool> {
        match self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(self) -> Option<&'a str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(self) -> Option<MetaArray<'a>> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// GGUF's id for this value's type (`gguf_type`).
    pub fn type_id(self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    /// A short name of this value's type, for messages.
    pub fn type_name(self) -> &'static str {
        value_type_name(self.type_id()).unwrap_or("?")
    }
}

fn value_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => return None,
    })
}

/// The width of one value of type `id` when all its values have the same width (numbers, bools).
fn fixed_value_bytes(id: u32) -> Option<usize> {
    Some(match id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

/// Fewest bytes one value of type `id` can occupy, or `None` for an unknown type. Used to reject
/// array counts that cannot possibly fit in the rest of the file before reserving memory for them.
fn min_value_bytes(id: u32) -> Option<u64> {
    Some(match id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // u64 length, possibly empty
        9 => 4 + 8, // element type and count, possibly empty
        10..=12 => 8,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Tensor types
// ---------------------------------------------------------------------------------------------

/// How a GGUF tensor is stored: a plain float type, or one of the quantized block types (whose
/// sizes and dequantization are [`QuantFormat`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Quant(QuantFormat),
}

impl GgmlType {
    /// The type with ggml id `id`. Errors name the id (and the ggml name when it is a known type
    /// that fasttx cannot read, e.g. the k-quants).
    pub fn from_id(id: u32) -> Result<Self> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            30 => GgmlType::BF16,
            _ => match QuantFormat::from_ggml_id(id) {
                Some(q) => GgmlType::Quant(q),
                None => return Err(unsupported_type(id)),
            },
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::BF16 => 30,
            GgmlType::Quant(q) => q.ggml_id(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Quant(q) => q.name(),
        }
    }

    /// Values per block: 1 for the float types.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Quant(q) => q.block_values(),
        }
    }

    /// Bytes per block (`ggml_type_size`).
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Quant(q) => q.block_bytes(),
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, GgmlType::Quant(_))
    }

    /// Converts whole blocks `src` into `dst` (`dst.len() / block_size` blocks): floats widened,
    /// quantized blocks dequantized bit for bit like ggml's reference `dequantize_row_*`.
    ///
    /// # Panics
    /// If `src` does not hold exactly that many blocks (a caller bug: [`GgufFile`] checks sizes
    /// when opening).
    pub fn to_f32(self, src: &[u8], dst: &mut [f32]) {
        match self {
            GgmlType::F32 => widen(src, dst, f32::from_le_bytes),
            GgmlType::F16 => widen(src, dst, |b| f16::from_le_bytes(b).to_f32()),
            GgmlType::BF16 => widen(src, dst, |b| bf16::from_le_bytes(b).to_f32()),
            GgmlType::Quant(q) => q.dequantize(src, dst),
        }
    }
}

/// `dst[i] = value(bytes i·W..(i + 1)·W of src)`.
///
/// # Panics
/// If `src` does not hold exactly `dst.len()` values.
fn widen<const W: usize>(src: &[u8], dst: &mut [f32], value: impl Fn([u8; W]) -> f32) {
    assert_eq!(
        src.len(),
        dst.len() * W,
        "{} bytes cannot fill {} values of {W} bytes",
        src.len(),
        dst.len()
    );
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(W)) {
        *y = value(b.try_into().expect("chunks of W bytes"));
    }
}

/// The error for a type id fasttx does not read, naming it when ggml knows it.
fn unsupported_type(id: u32) -> Error {
    match ggml_type_name(id) {
        Some(name) => {
            let mut readable: Vec<&str> = ["F32", "F16", "BF16"]
                .into_iter()
                .chain(QuantFormat::all().map(QuantFormat::name))
                .collect();
            let last = readable.pop().unwrap_or_default();
            format_err!(
                "ggml type {id} ({name}) is not supported (fasttx reads {} and {last})",
                readable.join(", ")
            )
        }
        None => format_err!("unknown ggml type id {id}"),
    }
}

/// ggml's names for its type ids (ggml.h `enum ggml_type`), so that a file using a type fasttx does
/// not read says which one. Ids 4, 5, 31–33 and 36–38 were removed from ggml.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// Where and how one tensor is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// PyTorch order (the file's ggml dims reversed): `[rows, cols]` for a matrix, so the last
    /// dimension is the contiguous one and, for quantized types, a multiple of 32.
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section ([`GgufFile::data_offset`]), as stored.
    pub offset: usize,
    pub byte_len: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open GGUF file: parsed header plus a read-only mapping of the whole file.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    /// The open file behind `map`: embedding tables read their rows from it
    /// ([`crate::tensor::Bytes::read_into`]). `None` for a file built in memory.
    file: Option<Arc<File>>,
    header: Header,
}

/// Everything parsed from the bytes before the data section.
#[derive(Debug)]
struct Header {
    version: u32,
    alignment: usize,
    data_offset: usize,
    /// Each key's value, as where it lies in the file: values are decoded when asked for.
    metadata: BTreeMap<String, ValueSpan>,
    /// In file order.
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// Where one metadata value lies: its type id and the byte range of its encoding (after the id).
#[derive(Debug)]
struct ValueSpan {
    ty: u32,
    bytes: std::ops::Range<usize>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only; like every mmap-based loader we assume the file is not
        // truncated by another process while the model is alive.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse(&map).map_err(|msg| format_err!("{}: {msg}", path.display()))?;
        Ok(GgufFile {
            file: Some(Arc::new(file)),
            path: path.to_path_buf(),
            map: Arc::new(map),
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 2 or 3 (the two share one layout; 3 added big-endian files, which fasttx does not read).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> usize {
        self.header.alignment
    }

    /// Absolute file offset of the data section; tensor offsets are relative to it.
    pub fn data_offset(&self) -> usize {
        self.header.data_offset
    }

    /// Every metadata pair, in key order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, MetaValue<'_>)> + '_ {
        self.header
            .metadata
            .iter()
            .filter_map(|(k, span)| Some((k.as_str(), self.value(span)?)))
    }

    /// How many metadata pairs the file has.
    pub fn metadata_len(&self) -> usize {
        self.header.metadata.len()
    }

    pub fn get(&self, key: &str) -> Option<MetaValue<'_>> {
        self.value(self.header.metadata.get(key)?)
    }

    /// The value stored at `span`. `parse` decoded it successfully, so decoding cannot fail; an
    /// array is not walked again (its span is known), so this is O(1) for all but strings.
    fn value(&self, span: &ValueSpan) -> Option<MetaValue<'_>> {
        let bytes = &self.map[span.bytes.clone()];
        let mut r = Reader { buf: bytes, pos: 0 };
        if span.ty != 9 {
            return r.value(span.ty, 0).ok();
        }
        let elem = r.u32("array element type").ok()?;
        let len = usize::try_from(r.u64("array length").ok()?).ok()?;
        Some(MetaValue::Array(MetaArray {
            elem,
            len,
            bytes: &bytes[r.pos..],
        }))
    }

    /// `general.architecture` (`llama`, `gpt2`, `t5`, ...), if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(MetaValue::as_str)
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The stored bytes of tensor `name` (blocks as in the file), for kernels that consume the
    /// quantized format directly.
    pub fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.tensor_info(name).ok_or_else(|| {
            format_err!("tensor '{name}' is missing from {}", self.path.display())
        })?;
        let begin = self.header.data_offset + info.offset;
        // In bounds: `parse` checked every tensor's range against the file length.
        Ok((info, &self.map[begin..begin + info.byte_len]))
    }
}

impl GgufFile {
    /// Tensor `name`'s stored bytes as a view that shares the mapping (zero-copy quantized weights).
    pub fn shared_bytes(&self, name: &str) -> Result<(&TensorInfo, crate::tensor::Bytes)> {
        let (info, _) = self.raw(name)?;
        let offset = self.header.data_offset + info.offset;
        Ok((
            info,
            crate::tensor::Bytes::Mapped {
                map: self.map.clone(),
                offset,
                len: info.byte_len,
                file: self.file.clone(),
            },
        ))
    }
}

impl WeightSource for GgufFile {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let (info, bytes) = self.raw(name)?;
        let begin = self.header.data_offset + info.offset;
        let ty = info.ggml_type;
        // The mapping starts page-aligned, so a 4-aligned file offset is a 4-aligned address.
        if ty == GgmlType::F32 && begin.is_multiple_of(4) {
            return Ok(Tensor::mapped(info.shape.clone(), self.map.clone(), begin));
        }
        let mut out = crate::memory::weight_buffer(info.numel());
        let (bs, bb) = (ty.block_size(), ty.block_bytes());
        // Whole blocks per task, so each task's source and destination chunks match exactly.
        out.par_chunks_mut(BLOCKS_PER_TASK * bs)
            .zip(bytes.par_chunks(BLOCKS_PER_TASK * bb))
            .for_each(|(dst, src)| ty.to_f32(src, dst));
        // The f32 copy replaces the stored blocks, whose pages need not stay resident.
        crate::memory::release_mapped(bytes);
        Tensor::from_vec(info.shape.clone(), out)
    }

    fn contains(&self, name: &str) -> bool {
        self.header.index.contains_key(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// A cursor over the file bytes whose every read is bounds-checked. Errors are plain strings;
/// callers add what was being read and `GgufFile::open` adds the path.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated header: {what} needs {n} bytes at offset {}, but the file has only {} more",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A `gguf_string`: `u64` byte length, then UTF-8 without terminator.
    fn string(&mut self, what: &str) -> std::result::Result<&'a str, String> {
        let len = self.u64(what)?;
        // Compare as u64 first: the claimed length may not even fit in usize.
        if len > self.remaining() as u64 {
            return Err(format!(
                "{what}: string length {len} exceeds the {} bytes left in the file (corrupt or truncated file)",
                self.remaining()
            ));
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes).map_err(|e| format!("{what} is not valid UTF-8 ({e})"))
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in the rest of the file.
    fn check_count(
        &self,
        count: u64,
        min_bytes: u64,
        what: &str,
    ) -> std::result::Result<(), String> {
        let rem = self.remaining() as u64;
        match count.checked_mul(min_bytes) {
            Some(need) if need <= rem => Ok(()),
            need => Err(format!(
                "{what} {count} is impossible: that many need at least {} bytes, but the file has only {rem} more (corrupt or truncated file)",
                need.map_or_else(|| "2^64".to_string(), |n| n.to_string())
            )),
        }
    }

    /// Decodes (and so validates) one value of type `ty`. An array's elements are all checked here
    /// but not kept: the result spans their bytes.
    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<MetaValue<'a>, String> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array("u8 value")?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array("i8 value")?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array("u16 value")?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array("i16 value")?)),
            4 => MetaValue::U32(self.u32("u32 value")?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array("i32 value")?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array("f32 value")?)),
            7 => match self.array::<1>("bool value")? {
                [0] => MetaValue::Bool(false),
                [1] => MetaValue::Bool(true),
                // ggml writes bools as 0/1; anything else means we are reading garbage.
                [b] => return Err(format!("bool value is {b}, not 0 or 1")),
            },
            8 => MetaValue::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "arrays nested more than {MAX_ARRAY_DEPTH} levels deep"
                    ));
                }
                let elem = self.u32("array element type")?;
                let min = min_value_bytes(elem)
                    .ok_or_else(|| format!("array has unknown element value type {elem}"))?;
                let count = self.u64("array length")?;
                let what = format!(
                    "array length (of {} elements)",
                    value_type_name(elem).unwrap_or("?")
                );
                self.check_count(count, min, &what)?;
                let start = self.pos;
                match fixed_value_bytes(elem) {
                    // Numbers need no check: skip them without touching their pages. Bools must
                    // be 0 or 1.
                    Some(w) if elem != 7 => {
                        // `count * min <= remaining` was just checked, and `min == w` here.
                        self.take(count as usize * w, &what)?;
                    }
                    _ => {
                        for i in 0..count {
                            self.value(elem, depth + 1)
                                .map_err(|e| format!("array element {i}: {e}"))?;
                        }
                    }
                }
                MetaValue::Array(MetaArray {
                    elem,
                    // Fits: at least one byte per element was checked above.
                    len: count as usize,
                    bytes: &self.buf[start..self.pos],
                })
            }
            10 => MetaValue::U64(self.u64("u64 value")?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array("i64 value")?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array("f64 value")?)),
            _ => return Err(format!("unknown metadata value type {ty}")),
        })
    }
}

/// Parses everything up to the data section and validates every tensor's place in the file.
fn parse(buf: &[u8]) -> std::result::Result<Header, String> {
    if buf.len() < MAGIC.len() {
        return Err(format!(
            "not a GGUF file: only {} bytes (empty or truncated file)",
            buf.len()
        ));
    }
    let mut r = Reader { buf, pos: 0 };
    let magic = r.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(format!(
            "not a GGUF file: starts with bytes {magic:02x?}, expected \"GGUF\" (47 47 55 46)"
        ));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "GGUF version 1 is not supported (it predates 64-bit counts; re-convert the model with a current llama.cpp)"
                    .into(),
            )
        }
        // A big-endian file's small version number reads as a multiple of 2^16 here; ggml uses the
        // same test.
        v if v != 0 && v & 0xFFFF == 0 => {
            return Err(format!(
                "big-endian GGUF file (version {} byte-swapped): fasttx reads little-endian files only",
                v.swap_bytes()
            ))
        }
        v => {
            return Err(format!(
                "unsupported GGUF version {v} (fasttx reads versions 2 and 3)"
            ))
        }
    }
    let tensor_count = r.u64("tensor_count")?;
    let kv_count = r.u64("metadata_kv_count")?;
    // Cheap early rejection of absurd counts; each section is checked exactly again before its loop.
    r.check_count(kv_count, MIN_KV_BYTES, "metadata_kv_count")?;
    let kv_min = kv_count * MIN_KV_BYTES; // no overflow: checked above
    let rem_after_kv = (r.remaining() as u64) - kv_min;
    if !matches!(tensor_count.checked_mul(MIN_TENSOR_INFO_BYTES), Some(need) if need <= rem_after_kv)
    {
        return Err(format!(
            "tensor_count {tensor_count} is impossible: the {} bytes after the counts cannot hold that many tensor infos besides {kv_count} metadata entries (corrupt or truncated file)",
            r.remaining()
        ));
    }

    if kv_count > MAX_METADATA_KEYS {
        return Err(format!(
            "metadata_kv_count {kv_count} exceeds fasttx's limit of {MAX_METADATA_KEYS} keys (real files have a few dozen)"
        ));
    }

    let mut metadata = BTreeMap::new();
    let mut alignment_value = None;
    for i in 0..kv_count {
        let key = r
            .string("metadata key")
            .map_err(|e| format!("metadata entry {i}: {e}"))?;
        let in_key = |e: String| format!("metadata key '{key}': {e}");
        let ty = r.u32("value type").map_err(in_key)?;
        let start = r.pos;
        let value = r.value(ty, 0).map_err(in_key)?;
        if key == "general.alignment" {
            alignment_value = Some(value);
        }
        let span = ValueSpan {
            ty,
            bytes: start..r.pos,
        };
        // ggml rejects duplicates too; keeping either one silently could change a hyperparameter.
        if metadata.insert(key.to_owned(), span).is_some() {
            return Err(format!("duplicate metadata key '{key}'"));
        }
    }

    let alignment = match alignment_value {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_u64().ok_or_else(|| {
                format!(
                    "general.alignment must be a non-negative integer, got {} {v:?}",
                    v.type_name()
                )
            })?;
            // Power of two (ggml computes padding with masks) and a multiple of 8 (the spec's rule,
            // which also keeps every F32 tensor 4-byte aligned for zero-copy mapping).
            if a == 0 || !a.is_power_of_two() || !a.is_multiple_of(8) {
                return Err(format!(
                    "general.alignment is {a}; it must be a nonzero power of two and a multiple of 8"
                ));
            }
            usize::try_from(a)
                .map_err(|_| format!("general.alignment {a} does not fit in memory addresses"))?
        }
    };

    r.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, "tensor_count")?;
    if tensor_count > MAX_TENSORS {
        return Err(format!(
            "tensor_count {tensor_count} exceeds fasttx's limit of {MAX_TENSORS} tensors"
        ));
    }
    // Cannot over-reserve: `tensor_count * 24 <= remaining bytes` was just checked.
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut index = HashMap::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = r
            .string("tensor name")
            .map_err(|e| format!("tensor info {i}: {e}"))?;
        let info = parse_tensor_info(&mut r, name, alignment)
            .map_err(|e| format!("tensor '{name}': {e}"))?;
        if index.insert(name.to_owned(), tensors.len()).is_some() {
            return Err(format!("duplicate tensor name '{name}'"));
        }
        tensors.push(info);
    }

    // The data section starts at the first multiple of the alignment after the tensor infos. With
    // no tensors the padding may be missing entirely, which is harmless.
    let data_offset = r
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or("data section offset overflows")?;
    // Every tensor's bytes are sliced from `data_offset`, even an empty tensor's, so it must lie in
    // the file whenever there are tensors (an absurd `general.alignment` could push it past the end).
    if !tensors.is_empty() && data_offset > buf.len() {
        return Err(format!(
            "the data section would start at byte {data_offset} (after padding to the alignment {alignment}), past the end of the {}-byte file (truncated file, or a corrupt alignment)",
            buf.len()
        ));
    }
    let data_len = buf.len().saturating_sub(data_offset);
    for t in &tensors {
        let end = t.offset.checked_add(t.byte_len);
        if !matches!(end, Some(end) if end <= data_len) {
            return Err(format!(
                "tensor '{}': data range {}..{} ({} data, relative to the data section at byte {data_offset}) lies outside the file's {data_len} data bytes (truncated file?)",
                t.name,
                t.offset,
                end.map_or_else(|| "overflow".to_string(), |e| e.to_string()),
                t.ggml_type.name()
            ));
        }
    }
    // ggml itself requires tensors to be packed in file order; we accept any order but no overlap,
    // since overlapping tensors mean the offsets are corrupt.
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.byte_len > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.byte_len > b.offset {
            return Err(format!(
                "tensors '{}' (bytes {}..{}) and '{}' (bytes {}..{}) overlap",
                a.name,
                a.offset,
                a.offset + a.byte_len,
                b.name,
                b.offset,
                b.offset + b.byte_len
            ));
        }
    }

    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
        index,
    })
}

/// The rest of one tensor info after its name.
fn parse_tensor_info(
    r: &mut Reader,
    name: &str,
    alignment: usize,
) -> std::result::Result<TensorInfo, String> {
    let n_dims = r.u32("n_dims")?;
    if n_dims as usize > MAX_DIMS {
        return Err(format!(
            "n_dims {n_dims} exceeds ggml's maximum of {MAX_DIMS}"
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64("dimension")?);
    }
    let type_id = r.u32("ggml type")?;
    let offset = r.u64("data offset")?;
    let ty = GgmlType::from_id(type_id).map_err(|e| e.to_string())?;

    // ggml stores dims as int64; larger values (or a product past usize) mean corruption. The
    // product of the nonzero dims must fit too: with a zero dim the element count is 0 in any
    // order, but code that multiplies the shape in another order must not overflow on the way.
    let product = |nonzero_only: bool| {
        dims.iter()
            .filter(|&&d| !nonzero_only || d > 0)
            .try_fold(1u64, |acc, &d| {
                if d > i64::MAX as u64 {
                    None
                } else {
                    acc.checked_mul(d)
                }
            })
    };
    let numel = product(false)
        .filter(|_| product(true).is_some())
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))? as u64;
    // A scalar (n_dims = 0) has one value and a row length of 1.
    let row_len = dims.first().copied().unwrap_or(1);
    let block = ty.block_size() as u64;
    if !row_len.is_multiple_of(block) {
        return Err(format!(
            "row length {row_len} (dims {dims:?}) is not a multiple of the {} block size {block}",
            ty.name()
        ));
    }
    let byte_len = (numel / block)
        .checked_mul(ty.block_bytes() as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("dimensions {dims:?} overflow the byte size"))?;
    if !offset.is_multiple_of(alignment as u64) {
        return Err(format!(
            "data offset {offset} is not a multiple of the alignment {alignment}"
        ));
    }
    // Offsets past the file are reported by the range check with the file size; here just keep
    // the value representable.
    let offset = usize::try_from(offset)
        .map_err(|_| format!("data offset {offset} lies outside the file"))?;
    let shape = dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} does not fit in memory")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(TensorInfo {
        name: name.to_owned(),
        shape,
        ggml_type: ty,
        offset,
        byte_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use memmap2::MmapMut;

    const Q4_0: GgmlType = GgmlType::Quant(QuantFormat::Q4_0);
    const Q4_1: GgmlType = GgmlType::Quant(QuantFormat::Q4_1);
    const Q8_0: GgmlType = GgmlType::Quant(QuantFormat::Q8_0);

    // ---- A minimal GGUF writer, so every test states exactly which bytes it feeds the reader ----

    fn put_str(b: &mut Vec<u8>, s: &[u8]) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s);
    }

    /// A value for the test writer: a scalar, or an array (element type id, items) of them.
    #[derive(Clone, Debug)]
    enum V {
        S(MetaValue<'static>),
        A(u32, Vec<V>),
    }

    impl From<MetaValue<'static>> for V {
        fn from(v: MetaValue<'static>) -> Self {
            V::S(v)
        }
    }

    impl V {
        fn type_id(&self) -> u32 {
            match self {
                V::S(v) => v.type_id(),
                V::A(..) => 9,
            }
        }

        /// Whether the file's value `m` is this one.
        fn is(&self, m: MetaValue) -> bool {
            match (self, m) {
                (V::S(v), m) => *v == m,
                (V::A(elem, items), MetaValue::Array(a)) => {
                    a.elem_type() == *elem
                        && a.len() == items.len()
                        && items.iter().zip(a.iter()).all(|(v, m)| v.is(m))
                        && items
                            .iter()
                            .enumerate()
                            .all(|(i, v)| v.is(a.get(i).unwrap()))
                }
                _ => false,
            }
        }
    }

    fn put(b: &mut Vec<u8>, v: &V) {
        match v {
            V::S(v) => put_value(b, v),
            V::A(elem, items) => {
                b.extend(elem.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    put(b, item);
                }
            }
        }
    }

    /// Encodes a scalar without its type id.
    fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
        match *v {
            MetaValue::U8(x) => b.push(x),
            MetaValue::I8(x) => b.extend(x.to_le_bytes()),
            MetaValue::U16(x) => b.extend(x.to_le_bytes()),
            MetaValue::I16(x) => b.extend(x.to_le_bytes()),
            MetaValue::U32(x) => b.extend(x.to_le_bytes()),
            MetaValue::I32(x) => b.extend(x.to_le_bytes()),
            MetaValue::F32(x) => b.extend(x.to_le_bytes()),
            MetaValue::Bool(x) => b.push(u8::from(x)),
            MetaValue::String(s) => put_str(b, s.as_bytes()),
            MetaValue::Array(_) => unreachable!("test arrays are written from V::A"),
            MetaValue::U64(x) => b.extend(x.to_le_bytes()),
            MetaValue::I64(x) => b.extend(x.to_le_bytes()),
            MetaValue::F64(x) => b.extend(x.to_le_bytes()),
        }
    }

    struct TensorSpec {
        name: Vec<u8>,
        /// ggml order, fastest first.
        dims: Vec<u64>,
        type_id: u32,
        data: Vec<u8>,
        /// `None`: placed after the previous tensor at the next multiple of the alignment.
        offset: Option<u64>,
    }

    struct Gguf {
        version: u32,
        tensor_count: Option<u64>,
        kv_count: Option<u64>,
        alignment: usize,
        /// Key, then type id + encoded value (raw, so tests can write invalid values).
        kvs: Vec<(Vec<u8>, Vec<u8>)>,
        tensors: Vec<TensorSpec>,
    }

    impl Gguf {
        fn new() -> Self {
            Gguf {
                version: 3,
                tensor_count: None,
                kv_count: None,
                alignment: DEFAULT_ALIGNMENT,
                kvs: Vec::new(),
                tensors: Vec::new(),
            }
            .kv("general.architecture", MetaValue::String("llama"))
        }

        fn kv(self, key: &str, v: impl Into<V>) -> Self {
            let v = v.into();
            let mut raw = v.type_id().to_le_bytes().to_vec();
            put(&mut raw, &v);
            self.raw_kv(key.as_bytes(), raw)
        }

        fn raw_kv(mut self, key: &[u8], type_and_value: Vec<u8>) -> Self {
            self.kvs.push((key.to_vec(), type_and_value));
            self
        }

        fn alignment(mut self, a: usize) -> Self {
            self.alignment = a;
            self.kv("general.alignment", MetaValue::U32(a as u32))
        }

        fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
            self.raw_tensor(name, dims, ty.id(), data, None)
        }

        fn raw_tensor(
            mut self,
            name: &str,
            dims: &[u64],
            type_id: u32,
            data: Vec<u8>,
            offset: Option<u64>,
        ) -> Self {
            self.tensors.push(TensorSpec {
                name: name.as_bytes().to_vec(),
                dims: dims.to_vec(),
                type_id,
                data,
                offset,
            });
            self
        }

        fn build(&self) -> Vec<u8> {
            let mut b = b"GGUF".to_vec();
            b.extend(self.version.to_le_bytes());
            let tensor_count = self.tensor_count.unwrap_or(self.tensors.len() as u64);
            b.extend(tensor_count.to_le_bytes());
            b.extend(self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
            for (key, raw) in &self.kvs {
                put_str(&mut b, key);
                b.extend(raw);
            }
            let mut next = 0u64;
            let mut offsets = Vec::new();
            for t in &self.tensors {
                let off = t
                    .offset
                    .unwrap_or(next.next_multiple_of(self.alignment as u64));
                next = off + t.data.len() as u64;
                offsets.push(off);
                put_str(&mut b, &t.name);
                b.extend((t.dims.len() as u32).to_le_bytes());
                for d in &t.dims {
                    b.extend(d.to_le_bytes());
                }
                b.extend(t.type_id.to_le_bytes());
                b.extend(off.to_le_bytes());
            }
            b.resize(b.len().next_multiple_of(self.alignment), 0);
            let data_start = b.len();
            // Tensors without data (for offsets that point outside the file) add no bytes.
            for (t, off) in self
                .tensors
                .iter()
                .zip(offsets)
                .filter(|(t, _)| !t.data.is_empty())
            {
                let at = data_start + off as usize;
                if b.len() < at + t.data.len() {
                    b.resize(at + t.data.len(), 0);
                }
                b[at..at + t.data.len()].copy_from_slice(&t.data);
            }
            b
        }
    }

    fn tmp_path(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fasttx-gguf-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("model.gguf")
    }

    fn open_bytes(tag: &str, bytes: &[u8]) -> Result<GgufFile> {
        let path = tmp_path(tag);
        std::fs::write(&path, bytes).unwrap();
        GgufFile::open(&path)
    }

    /// The error from opening `bytes`, checking that it is a format error naming the file.
    fn open_err(tag: &str, bytes: &[u8]) -> String {
        match open_bytes(tag, bytes) {
            Ok(_) => panic!("{tag}: malformed file was accepted"),
            Err(e @ Error::Format(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("model.gguf: "), "{tag}: no path in '{msg}'");
                msg
            }
            Err(e) => panic!("{tag}: expected a format error, got {e}"),
        }
    }

    /// A `GgufFile` over an anonymous mapping, for the many-variant fuzz test (no disk traffic).
    fn from_memory(bytes: &[u8]) -> std::result::Result<GgufFile, String> {
        let header = parse(bytes)?;
        let mut map = MmapMut::map_anon(bytes.len().max(1)).unwrap();
        map[..bytes.len()].copy_from_slice(bytes);
        Ok(GgufFile {
            path: PathBuf::from("<memory>"),
            map: Arc::new(map.make_read_only().unwrap()),
            file: None,
            header,
        })
    }

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    /// Q4_0 block of scale `d` with bytes `qs`.
    fn q4_0_block(d: f32, qs: [u8; 16]) -> Vec<u8> {
        let mut b = f16_bytes(d).to_vec();
        b.extend(qs);
        b
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    // ---- Round trips ----

    fn every_metadata_type() -> Vec<(&'static str, V)> {
        use MetaValue::*;
        let arr = |elem: u32, items: Vec<V>| V::A(elem, items);
        let s = |v: MetaValue<'static>| V::S(v);
        let list: Vec<(&'static str, V)> = vec![
            ("t.u8", s(U8(200))),
            ("t.i8", s(I8(-100))),
            ("t.u16", s(U16(60000))),
            ("t.i16", s(I16(-30000))),
            ("t.u32", s(U32(4_000_000_000))),
            ("t.i32", s(I32(-2_000_000_000))),
            ("t.f32", s(F32(1.25))),
            ("t.bool", s(Bool(true))),
            ("t.bool_false", s(Bool(false))),
            ("t.string", s(String("héllo ✓"))),
            ("t.empty_string", s(String(""))),
            (
                "t.strings",
                arr(8, vec![s(String("<s>")), s(String("")), s(String("▁the"))]),
            ),
            ("t.f32s", arr(6, vec![s(F32(-0.5)), s(F32(2.0))])),
            ("t.bools", arr(7, vec![s(Bool(true)), s(Bool(false))])),
            (
                "t.nested",
                arr(
                    9,
                    vec![
                        arr(5, vec![s(I32(1)), s(I32(2))]),
                        arr(5, vec![s(I32(3))]),
                        arr(5, vec![]),
                    ],
                ),
            ),
            ("t.empty", arr(0, vec![])),
            ("t.u64", s(U64(1 << 40))),
            ("t.i64", s(I64(-(1 << 40)))),
            ("t.f64", s(F64(std::f64::consts::PI))),
        ];
        list
    }

    #[test]
    fn reads_every_metadata_type() {
        let mut g = Gguf::new().kv("general.name", MetaValue::String("tiny"));
        for (k, v) in every_metadata_type() {
            g = g.kv(k, v);
        }
        let f = open_bytes("meta", &g.build()).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.alignment(), 32);
        for (k, v) in every_metadata_type() {
            assert!(v.is(f.get(k).unwrap()), "{k}: {:?}", f.get(k));
        }
        assert_eq!(f.metadata_len(), every_metadata_type().len() + 2);
        assert_eq!(f.metadata().count(), f.metadata_len());
        assert!(f.tensors().is_empty());

        // Helpers accept any integer type whose value fits.
        assert_eq!(f.get("t.u8").unwrap().as_u64(), Some(200));
        assert_eq!(f.get("t.i8").unwrap().as_u64(), None);
        assert_eq!(f.get("t.i8").unwrap().as_i64(), Some(-100));
        assert_eq!(f.get("t.u32").unwrap().as_f64(), Some(4e9));
        assert_eq!(f.get("t.f32").unwrap().as_f64(), Some(1.25));
        assert_eq!(f.get("t.f32").unwrap().as_u64(), None);
        assert_eq!(f.get("t.bool").unwrap().as_bool(), Some(true));
        assert_eq!(f.get("t.string").unwrap().as_str(), Some("héllo ✓"));
        let nested = f.get("t.nested").unwrap().as_array().unwrap();
        let first = nested.get(0).unwrap().as_array().unwrap();
        assert_eq!(first.get(1).unwrap().as_i64(), Some(2));
        assert_eq!((nested.get(3), first.get(2)), (None, None));
        // Numbers are handed out whole, strings are walked.
        let floats = f.get("t.f32s").unwrap().as_array().unwrap();
        assert_eq!(floats.fixed_width(), Some((4, &f32s(&[-0.5, 2.0])[..])));
        let strings = f.get("t.strings").unwrap().as_array().unwrap();
        assert_eq!(strings.fixed_width(), None);
        assert_eq!(strings.get(2).unwrap().as_str(), Some("▁the"));
        assert_eq!(strings.elem_type_name(), "string");
        assert_eq!(f.get("t.u64").unwrap().type_name(), "u64");
    }

    #[test]
    fn version_2_reads_like_version_3() {
        let mut g = Gguf::new().tensor("a", &[2], GgmlType::F32, f32s(&[1.0, 2.0]));
        g.version = 2;
        let f = open_bytes("v2", &g.build()).unwrap();
        assert_eq!(f.version(), 2);
        assert_eq!(f.tensor("a").unwrap().data(), &[1.0, 2.0]);
    }

    #[test]
    fn reads_float_tensors_with_custom_alignment() {
        let vals = [1.5f32, -2.25, 0.0, 3.0e-3, 1.0e30, -7.0];
        let halfs = [1.0f32, -0.5, 65504.0, 1.0e-7];
        let g = Gguf::new()
            .alignment(64)
            .kv("pad", MetaValue::String("x")) // odd header length
            .tensor("f32", &[3, 2], GgmlType::F32, f32s(&vals))
            .tensor(
                "f16",
                &[4],
                GgmlType::F16,
                halfs.iter().flat_map(|v| f16_bytes(*v)).collect(),
            )
            .tensor(
                "bf16",
                &[2, 1, 2],
                GgmlType::BF16,
                halfs
                    .iter()
                    .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            )
            .tensor("scalar", &[], GgmlType::F32, f32s(&[42.0]));
        let f = open_bytes("floats", &g.build()).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert!(f.tensors().iter().all(|t| t.offset % 64 == 0));
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f32", "f16", "bf16", "scalar"]);

        let a = f.tensor("f32").unwrap();
        assert!(a.is_mapped(), "aligned F32 must be zero-copy");
        assert_eq!(a.shape(), &[2, 3]); // ggml dims [3, 2] → PyTorch [rows, cols]
        assert_eq!(a.data(), &vals);

        let h = f.tensor("f16").unwrap();
        assert_eq!(h.shape(), &[4]);
        assert_eq!(
            h.data(),
            &[1.0, -0.5, 65504.0, f16::from_f32(1.0e-7).to_f32()]
        );

        let b = f.tensor("bf16").unwrap();
        assert_eq!(b.shape(), &[2, 1, 2]);
        let want: Vec<f32> = halfs.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
        assert_eq!(b.data(), &want[..]);

        let s = f.tensor("scalar").unwrap();
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_eq!(s.data(), &[42.0]);

        let (info, raw) = f.raw("f16").unwrap();
        assert_eq!(
            (info.ggml_type, info.byte_len, raw.len()),
            (GgmlType::F16, 8, 8)
        );
        assert_eq!(&raw[..2], &f16_bytes(1.0));
        assert!(f.contains("bf16") && !f.contains("nope"));
        let err = f.tensor("nope").err().unwrap().to_string();
        assert!(err.contains("'nope' is missing"), "{err}");
    }

    #[test]
    fn alignment_8_still_maps_f32() {
        let g = Gguf::new()
            .alignment(8)
            .kv("x", MetaValue::U8(1))
            .tensor("a", &[1], GgmlType::F32, f32s(&[3.0]))
            .tensor("b", &[3], GgmlType::F32, f32s(&[4.0, 5.0, 6.0]));
        let f = open_bytes("align8", &g.build()).unwrap();
        assert_eq!(f.alignment(), 8);
        assert_eq!(f.tensor_info("b").unwrap().offset, 8);
        let b = f.tensor("b").unwrap();
        assert!(b.is_mapped());
        assert_eq!(b.data(), &[4.0, 5.0, 6.0]);
    }

    #[test]
    fn q4_0_nibble_order() {
        // Low nibble of byte 0 is element 0, high nibble element 16: 0x1F → x[0] = (15-8)·d,
        // x[16] = (1-8)·d. 0x88 encodes zero in both halves. An adjacent-pairs reading would put
        // the -7·d at x[1] instead.
        let mut qs = [0x88u8; 16];
        qs[0] = 0x1F;
        qs[15] = 0x80; // x[15] = -8·d, x[31] = 0
        let g = Gguf::new().tensor("w", &[32], Q4_0, q4_0_block(0.5, qs));
        let f = open_bytes("nibbles", &g.build()).unwrap();
        let t = f.tensor("w").unwrap();
        let mut want = [0.0f32; 32];
        want[0] = 3.5;
        want[16] = -3.5;
        want[15] = -4.0;
        assert_eq!(t.data(), &want);
    }

    #[test]
    fn dequantizes_q4_0_q4_1_q8_0_blocks() {
        // Q4_0, 2 rows × 32: row 0 has qs[j] = j | (15-j) << 4, d = 0.5; row 1 all 0x0F, d = -0.25.
        let mut qs0 = [0u8; 16];
        for (j, q) in qs0.iter_mut().enumerate() {
            *q = j as u8 | ((15 - j as u8) << 4);
        }
        let mut q4_0 = q4_0_block(0.5, qs0);
        q4_0.extend(q4_0_block(-0.25, [0x0F; 16]));

        // Q4_1, one block: d = 0.5, m = -1.0, qs[j] = (15-j) | j << 4.
        let mut q4_1 = f16_bytes(0.5).to_vec();
        q4_1.extend(f16_bytes(-1.0));
        q4_1.extend((0..16u8).map(|j| (15 - j) | (j << 4)));

        // Q8_0, two blocks: d = 0.125 with the extremes, d = -2.0 with 0..32.
        let qs8: [i8; 32] = std::array::from_fn(|j| match j {
            0 => -128,
            1 => 127,
            2 => -1,
            _ => j as i8 - 16,
        });
        let mut q8_0 = f16_bytes(0.125).to_vec();
        q8_0.extend(qs8.iter().map(|q| *q as u8));
        q8_0.extend(f16_bytes(-2.0));
        q8_0.extend(0..32u8);

        let g = Gguf::new()
            .tensor("q4_0", &[32, 2], Q4_0, q4_0)
            .tensor("q4_1", &[32], Q4_1, q4_1)
            .tensor("q8_0", &[64], Q8_0, q8_0);
        let f = open_bytes("quant", &g.build()).unwrap();

        let t = f.tensor("q4_0").unwrap();
        assert_eq!(t.shape(), &[2, 32]);
        let r0 = t.row(0);
        assert_eq!(&r0[..4], &[-4.0, -3.5, -3.0, -2.5]); // (j - 8) · 0.5
        assert_eq!(r0[15], 3.5);
        assert_eq!(&r0[16..20], &[3.5, 3.0, 2.5, 2.0]); // (15 - j - 8) · 0.5
        assert_eq!(r0[31], -4.0);
        for j in 0..16 {
            assert_eq!(r0[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(r0[j + 16], (7.0 - j as f32) * 0.5);
        }
        // 0x0F: low nibble 15 → 7·(-0.25), high nibble 0 → -8·(-0.25).
        assert!(t.row(1)[..16].iter().all(|&x| x == -1.75));
        assert!(t.row(1)[16..].iter().all(|&x| x == 2.0));
        let (info, raw) = f.raw("q4_0").unwrap();
        assert_eq!((info.byte_len, raw.len(), raw[2]), (36, 36, 0xF0));

        let t = f.tensor("q4_1").unwrap();
        assert_eq!(&t.data()[..3], &[6.5, 6.0, 5.5]); // (15 - j) · 0.5 - 1
        assert_eq!(&t.data()[16..19], &[-1.0, -0.5, 0.0]); // j · 0.5 - 1
        for j in 0..16 {
            assert_eq!(t.data()[j], (15 - j) as f32 * 0.5 - 1.0);
            assert_eq!(t.data()[j + 16], j as f32 * 0.5 - 1.0);
        }

        let t = f.tensor("q8_0").unwrap();
        assert_eq!(&t.data()[..4], &[-16.0, 15.875, -0.125, -1.625]);
        for (j, q) in qs8.iter().enumerate() {
            assert_eq!(t.data()[j], *q as f32 * 0.125);
            assert_eq!(t.data()[32 + j], j as f32 * -2.0);
        }
    }

    #[test]
    fn large_quantized_tensor_splits_across_tasks() {
        // More blocks than one rayon task takes, with a distinct scale per block, so a mismatch
        // between source and destination chunks would show.
        let blocks = BLOCKS_PER_TASK * 2 + 3;
        let mut data = Vec::new();
        for i in 0..blocks {
            data.extend(f16_bytes((i % 1000) as f32));
            data.extend((0..32u8).map(|j| j.wrapping_sub(16)));
        }
        let g = Gguf::new().tensor("w", &[32 * 3, blocks as u64 / 3], Q8_0, data);
        let f = open_bytes("large", &g.build()).unwrap();
        let t = f.tensor("w").unwrap();
        assert_eq!(t.shape(), &[blocks / 3, 96]);
        for (i, block) in t.data().chunks_exact(32).enumerate() {
            let d = (i % 1000) as f32;
            for (j, x) in block.iter().enumerate() {
                assert_eq!(*x, (j as f32 - 16.0) * d, "block {i} value {j}");
            }
        }
    }

    // ---- Malformed files: each fails at open with a message naming the cause ----

    #[test]
    fn rejects_bad_magic_and_tiny_files() {
        let mut b = Gguf::new().build();
        b[..4].copy_from_slice(b"GGML");
        let err = open_err("magic", &b);
        assert!(
            err.contains("not a GGUF file") && err.contains("47 47 55 46"),
            "{err}"
        );
        let err = open_err("empty", b"");
        assert!(err.contains("only 0 bytes"), "{err}");
        let err = open_err("three", b"GGU");
        assert!(err.contains("only 3 bytes"), "{err}");
    }

    #[test]
    fn rejects_v1_big_endian_and_unknown_versions() {
        let mut g = Gguf::new();
        g.version = 1;
        let err = open_err("v1", &g.build());
        assert!(err.contains("version 1 is not supported"), "{err}");
        g.version = 4;
        let err = open_err("v4", &g.build());
        assert!(err.contains("unsupported GGUF version 4"), "{err}");
        g.version = 0;
        let err = open_err("v0", &g.build());
        assert!(err.contains("unsupported GGUF version 0"), "{err}");
        // A big-endian v3 file stores the version as 00 00 00 03.
        g.version = 3u32.swap_bytes();
        let err = open_err("be", &g.build());
        assert!(
            err.contains("big-endian") && err.contains("version 3"),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_is_reported() {
        let mut g = Gguf::new()
            .alignment(64)
            .tensor("a", &[4], GgmlType::F32, f32s(&[1.0, 2.0, 3.0, 4.0]))
            .tensor("b", &[32], Q4_0, q4_0_block(1.0, [0x12; 16]));
        for (k, v) in every_metadata_type() {
            g = g.kv(k, v);
        }
        let full = g.build();
        assert!(parse(&full).is_ok());
        for len in 0..full.len() {
            match parse(&full[..len]) {
                Ok(_) => panic!("prefix of {len} of {} bytes was accepted", full.len()),
                Err(e) => assert!(e.contains("truncated"), "prefix {len}: {e}"),
            }
        }
        // One through the file path too, to see the complete message.
        let err = open_err("truncated", &full[..40]);
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn rejects_oversized_string_lengths() {
        let mut value = 8u32.to_le_bytes().to_vec();
        value.extend((1u64 << 40).to_le_bytes());
        value.extend(b"abc");
        let err = open_err("strlen", &Gguf::new().raw_kv(b"k.s", value).build());
        assert!(
            err.contains("metadata key 'k.s'") && err.contains("string length 1099511627776"),
            "{err}"
        );

        // An absurd key length: overwrite the first key's length (right after the 24-byte header).
        let mut b = Gguf::new().build();
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = open_err("keylen", &b);
        assert!(
            err.contains("metadata entry 0") && err.contains("string length 18446744073709551615"),
            "{err}"
        );

        let mut b = Gguf::new()
            .tensor("abc", &[1], GgmlType::F32, f32s(&[1.0]))
            .build();
        let at = b.windows(3).position(|w| w == b"abc").unwrap() - 8;
        b[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
        let err = open_err("namelen", &b);
        assert!(
            err.contains("tensor info 0") && err.contains("string length"),
            "{err}"
        );
    }

    #[test]
    fn rejects_oversized_array_counts() {
        let mut value = 9u32.to_le_bytes().to_vec();
        value.extend(4u32.to_le_bytes()); // u32 elements
        value.extend((1u64 << 60).to_le_bytes());
        let err = open_err("arrlen", &Gguf::new().raw_kv(b"k.a", value).build());
        assert!(
            err.contains("metadata key 'k.a'")
                && err.contains("array length (of u32 elements) 1152921504606846976 is impossible"),
            "{err}"
        );
        // count * size overflowing u64 must not wrap around into "fits".
        let mut value = 9u32.to_le_bytes().to_vec();
        value.extend(10u32.to_le_bytes());
        value.extend((u64::MAX / 4).to_le_bytes());
        let err = open_err("arrwrap", &Gguf::new().raw_kv(b"k.a", value).build());
        assert!(err.contains("is impossible"), "{err}");
    }

    #[test]
    fn rejects_absurd_kv_and_tensor_counts() {
        let mut g = Gguf::new();
        g.kv_count = Some(u64::MAX);
        let err = open_err("kvcount", &g.build());
        assert!(
            err.contains("metadata_kv_count 18446744073709551615 is impossible"),
            "{err}"
        );
        g.kv_count = None;
        g.tensor_count = Some(1 << 40);
        let err = open_err("tcount", &g.build());
        assert!(
            err.contains("tensor_count 1099511627776 is impossible"),
            "{err}"
        );
    }

    #[test]
    fn rejects_too_many_dims_and_overflowing_shapes() {
        let g = Gguf::new().raw_tensor("t5d", &[1, 1, 1, 1, 1], 0, f32s(&[1.0]), None);
        let err = open_err("ndims", &g.build());
        assert!(err.contains("tensor 't5d': n_dims 5 exceeds"), "{err}");

        let g = Gguf::new().raw_tensor("big", &[1 << 62, 1 << 62], 0, vec![], None);
        let err = open_err("overflow", &g.build());
        assert!(
            err.contains("tensor 'big'") && err.contains("overflow"),
            "{err}"
        );

        let g = Gguf::new().raw_tensor("neg", &[u64::MAX, 0], 0, vec![], None);
        let err = open_err("negdim", &g.build());
        assert!(
            err.contains("tensor 'neg'") && err.contains("overflow"),
            "{err}"
        );

        // numel fits but the byte size (×4) does not.
        let g = Gguf::new().raw_tensor("bytes", &[1 << 62], 0, vec![], None);
        let err = open_err("bytesize", &g.build());
        assert!(
            err.contains("tensor 'bytes'") && err.contains("overflow"),
            "{err}"
        );
    }

    #[test]
    fn zero_dimensions_are_empty_tensors_without_overflow() {
        // A zero dim makes the element count 0 whatever the others; the others' product must
        // still fit, since code may multiply the shape in PyTorch order ([.., 2^40, 2^40, 0]).
        let f = open_bytes(
            "zerodim",
            &Gguf::new()
                .raw_tensor("z", &[0, 8], 0, vec![], None)
                .build(),
        )
        .unwrap();
        let info = f.tensor_info("z").unwrap();
        assert_eq!(
            (info.shape.as_slice(), info.numel(), info.byte_len),
            (&[8, 0][..], 0, 0)
        );
        assert_eq!(f.tensor("z").unwrap().numel(), 0);
        let g = Gguf::new().raw_tensor("z", &[0, 1 << 40, 1 << 40], 0, vec![], None);
        let err = open_err("zerodim_overflow", &g.build());
        assert!(
            err.contains("tensor 'z'") && err.contains("overflow"),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_data_section_past_the_end() {
        // An empty tensor at offset 0 fits any file, but the data section it is sliced from must
        // start inside the file: 2^40 is a valid alignment that puts it far beyond.
        let g = Gguf::new()
            .kv("general.alignment", MetaValue::U64(1 << 40))
            .raw_tensor("z", &[0], 0, vec![], Some(0));
        let err = open_err("farsection", &g.build());
        assert!(err.contains("past the end of the"), "{err}");
    }

    #[test]
    fn bounds_key_and_tensor_counts() {
        let mut g = Gguf::new();
        g.kv_count = Some(MAX_METADATA_KEYS + 1);
        // Enough bytes that only the absolute limit can refuse it.
        let mut b = g.build();
        b.resize(b.len() + 14 * (MAX_METADATA_KEYS as usize + 1), 0);
        let err = open_err("manykeys", &b);
        assert!(
            err.contains("exceeds fasttx's limit of 65536 keys"),
            "{err}"
        );

        let mut g = Gguf::new();
        g.tensor_count = Some(MAX_TENSORS + 1);
        let mut b = g.build();
        b.resize(b.len() + 24 * (MAX_TENSORS as usize + 1), 0);
        let err = open_err("manytensors", &b);
        assert!(
            err.contains("exceeds fasttx's limit of 65536 tensors"),
            "{err}"
        );
    }

    #[test]
    fn large_numeric_arrays_are_spans_not_values() {
        // 4 MB of u8: opening records a span; the elements are read only when asked for.
        let mut value = 9u32.to_le_bytes().to_vec();
        value.extend(0u32.to_le_bytes());
        value.extend((4u64 << 20).to_le_bytes());
        value.extend(vec![7u8; 4 << 20]);
        let f = open_bytes("bigarray", &Gguf::new().raw_kv(b"k.big", value).build()).unwrap();
        let a = f.get("k.big").unwrap().as_array().unwrap();
        assert_eq!((a.len(), a.elem_type_name()), (4 << 20, "u8"));
        assert_eq!(a.get((4 << 20) - 1), Some(MetaValue::U8(7)));
        assert_eq!(a.fixed_width().unwrap().1.len(), 4 << 20);
    }

    #[test]
    fn rejects_data_outside_the_file() {
        let full = Gguf::new()
            .tensor("a", &[8], GgmlType::F32, f32s(&[1.0; 8]))
            .build();
        let err = open_err("short", &full[..full.len() - 1]);
        assert!(
            err.contains("tensor 'a': data range 0..32") && err.contains("truncated"),
            "{err}"
        );
        let g = Gguf::new().raw_tensor("far", &[8], 0, vec![], Some(1 << 40));
        let err = open_err("far", &g.build());
        assert!(
            err.contains("tensor 'far'") && err.contains("outside the file"),
            "{err}"
        );
        let g = Gguf::new().raw_tensor("wrap", &[8], 0, vec![], Some(u64::MAX - 31));
        let err = open_err("wrap", &g.build());
        assert!(
            err.contains("tensor 'wrap'") && err.contains("outside the file"),
            "{err}"
        );
    }

    #[test]
    fn rejects_overlapping_and_misaligned_offsets() {
        let g = Gguf::new()
            .raw_tensor("a", &[16], 0, f32s(&[1.0; 16]), Some(0))
            .raw_tensor("b", &[8], 0, f32s(&[2.0; 8]), Some(32));
        let err = open_err("overlap", &g.build());
        assert!(
            err.contains("tensors 'a' (bytes 0..64) and 'b' (bytes 32..64) overlap"),
            "{err}"
        );
        let g = Gguf::new().raw_tensor("m", &[4], 0, f32s(&[1.0; 4]), Some(16));
        let err = open_err("misaligned", &g.build());
        assert!(
            err.contains("tensor 'm': data offset 16 is not a multiple of the alignment 32"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unsupported_and_unknown_tensor_types() {
        let g = Gguf::new().raw_tensor("blk.0.attn_q.weight", &[256], 16, vec![0; 66], None);
        let err = open_err("iq2xxs", &g.build());
        assert!(
            err.contains("tensor 'blk.0.attn_q.weight': ggml type 16 (IQ2_XXS) is not supported"),
            "{err}"
        );
        let g = Gguf::new().raw_tensor("x", &[4], 99, vec![0; 16], None);
        let err = open_err("type99", &g.build());
        assert!(err.contains("tensor 'x': unknown ggml type id 99"), "{err}");
    }

    #[test]
    fn rejects_quantized_rows_that_are_not_whole_blocks() {
        let g = Gguf::new().tensor("q", &[16, 2], Q4_0, vec![0; 18]);
        let err = open_err("rows", &g.build());
        assert!(
            err.contains("tensor 'q': row length 16")
                && err.contains("not a multiple of the Q4_0 block size 32"),
            "{err}"
        );
    }

    #[test]
    fn rejects_duplicates() {
        let g = Gguf::new()
            .tensor("a", &[1], GgmlType::F32, f32s(&[1.0]))
            .tensor("a", &[1], GgmlType::F32, f32s(&[2.0]));
        let err = open_err("duptensor", &g.build());
        assert!(err.contains("duplicate tensor name 'a'"), "{err}");
        let g = Gguf::new().kv("general.architecture", MetaValue::String("gpt2"));
        let err = open_err("dupkey", &g.build());
        assert!(
            err.contains("duplicate metadata key 'general.architecture'"),
            "{err}"
        );
    }

    #[test]
    fn limits_array_nesting() {
        let nest = |levels: usize| {
            (0..levels).fold(V::S(MetaValue::U8(7)), |v, _| V::A(v.type_id(), vec![v]))
        };
        let f = open_bytes("nest16", &Gguf::new().kv("deep", nest(16)).build()).unwrap();
        assert!(nest(16).is(f.get("deep").unwrap()));
        let err = open_err("nest17", &Gguf::new().kv("deep", nest(17)).build());
        assert!(
            err.contains("metadata key 'deep'") && err.contains("nested more than 16 levels"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_metadata_values() {
        let err = open_err(
            "vtype",
            &Gguf::new().raw_kv(b"k", vec![13, 0, 0, 0, 1]).build(),
        );
        assert!(
            err.contains("metadata key 'k': unknown metadata value type 13"),
            "{err}"
        );

        let mut v = 9u32.to_le_bytes().to_vec();
        v.extend(13u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        let err = open_err("etype", &Gguf::new().raw_kv(b"k", v).build());
        assert!(err.contains("unknown element value type 13"), "{err}");

        let err = open_err(
            "bool",
            &Gguf::new().raw_kv(b"k", vec![7, 0, 0, 0, 2]).build(),
        );
        assert!(err.contains("bool value is 2"), "{err}");

        let mut v = 8u32.to_le_bytes().to_vec();
        put_str(&mut v, b"\xff\xfe");
        let err = open_err("utf8", &Gguf::new().raw_kv(b"k", v).build());
        assert!(
            err.contains("metadata key 'k': string value is not valid UTF-8"),
            "{err}"
        );

        let err = open_err(
            "keyutf8",
            &Gguf::new().raw_kv(b"\xc3", vec![0, 0, 0, 0, 1]).build(),
        );
        assert!(err.contains("metadata key is not valid UTF-8"), "{err}");
    }

    #[test]
    fn validates_general_alignment() {
        for a in [0u32, 4, 12, 48] {
            let g = Gguf::new().kv("general.alignment", MetaValue::U32(a));
            let err = open_err(&format!("align{a}"), &g.build());
            assert!(
                err.contains(&format!("general.alignment is {a};")) && err.contains("power of two"),
                "{err}"
            );
        }
        let g = Gguf::new().kv("general.alignment", MetaValue::String("32"));
        let err = open_err("alignstr", &g.build());
        assert!(
            err.contains("general.alignment must be a non-negative integer"),
            "{err}"
        );
        let g = Gguf::new().kv("general.alignment", MetaValue::I32(-32));
        let err = open_err("alignneg", &g.build());
        assert!(
            err.contains("general.alignment must be a non-negative integer"),
            "{err}"
        );
        // Other integer types than the spec's u32 are accepted.
        let f = open_bytes(
            "alignu64",
            &Gguf::new()
                .kv("general.alignment", MetaValue::U64(16))
                .build(),
        )
        .unwrap();
        assert_eq!(f.alignment(), 16);
    }

    #[test]
    fn missing_file_is_io_not_found() {
        let err = GgufFile::open(Path::new("/nonexistent/x.gguf"))
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
    }

    /// Flips bytes all over a valid file: every variant must either parse (and then decode every
    /// tensor) or fail with an error, never panic.
    #[test]
    fn corrupted_bytes_never_panic() {
        let mut g = Gguf::new()
            .alignment(16)
            .tensor("a", &[2, 2], GgmlType::F32, f32s(&[1.0, 2.0, 3.0, 4.0]))
            .tensor("b", &[32], Q4_1, vec![0x11; 20])
            .tensor("c", &[32], Q8_0, vec![0x22; 34])
            .tensor("d", &[3], GgmlType::BF16, vec![0x33; 6]);
        for (k, v) in every_metadata_type() {
            g = g.kv(k, v);
        }
        let full = g.build();
        let (mut ok, mut bad) = (0, 0);
        for i in 0..full.len() {
            for v in [
                0x00,
                0xFF,
                full[i] ^ 0x01,
                full[i] ^ 0x80,
                full[i].wrapping_add(16),
            ] {
                let mut b = full.clone();
                b[i] = v;
                match from_memory(&b) {
                    Ok(f) => {
                        ok += 1;
                        for t in f.tensors() {
                            let x = f.tensor(&t.name).unwrap();
                            assert_eq!(x.numel(), t.numel());
                        }
                    }
                    Err(e) => {
                        bad += 1;
                        assert!(!e.is_empty());
                    }
                }
            }
        }
        assert!(ok > 0 && bad > 0, "ok {ok}, bad {bad}");
    }

    fn skip_outside_ci(why: &str) {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "CI=true but the gguf-py cross-check cannot run: {why}");
        println!("skipped: {why}");
    }

    /// Every tensor of the files llama.cpp's own quantizer made (`tests/fixtures/kquant`, every
    /// block type of its K-quant, IQ4 and Q5 file types) dequantizes bit for bit as gguf-py's
    /// reference dequantizers do, and so do the blocks of the types converted at load. Skipped like
    /// the cross-check below when python3 lacks `gguf`/`numpy`, except under CI.
    #[test]
    fn dequantizes_llama_cpp_quantized_files_as_gguf_py() {
        const SCRIPT: &str = r#"
import sys
from pathlib import Path
try:
    import numpy as np
    import gguf
except ImportError as e:
    print(f"import failed: {e}", file=sys.stderr)
    sys.exit(3)
fixtures, out = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(fixtures.glob("*.gguf")):
    r = gguf.GGUFReader(str(path))
    values = [np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype="<f4").ravel() for t in r.tensors]
    np.concatenate(values).tofile(out / (path.stem + ".f32"))
    (out / (path.stem + ".names")).write_text("\n".join(t.name for t in r.tensors))
"#;
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/kquant");
        let dir = tmp_path("kquant").parent().unwrap().to_path_buf();
        let run = std::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&fixtures)
            .arg(&dir)
            .output();
        let out = match run {
            Ok(out) => out,
            Err(e) => return skip_outside_ci(&format!("cannot run python3 ({e})")),
        };
        if out.status.code() == Some(3) {
            let why = String::from_utf8_lossy(&out.stderr);
            return skip_outside_ci(&format!("python3 lacks gguf/numpy ({})", why.trim()));
        }
        assert!(
            out.status.success(),
            "gguf-py script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut types = std::collections::HashSet::new();
        let mut files = 0;
        for entry in std::fs::read_dir(&fixtures).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "gguf") {
                continue;
            }
            files += 1;
            let stem = path.file_stem().unwrap().to_str().unwrap();
            let expected: Vec<f32> = std::fs::read(dir.join(format!("{stem}.f32")))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let names = std::fs::read_to_string(dir.join(format!("{stem}.names"))).unwrap();
            let f = GgufFile::open(&path).unwrap();
            let mut at = 0;
            for name in names.lines() {
                let t = f.tensor(name).unwrap();
                let want = &expected[at..at + t.numel()];
                at += t.numel();
                for (i, (x, w)) in t.data().iter().zip(want).enumerate() {
                    assert_eq!(x.to_bits(), w.to_bits(), "{stem} {name}[{i}]: {x} vs {w}");
                }
                let (info, raw) = f.raw(name).unwrap();
                let GgmlType::Quant(q) = info.ggml_type else {
                    continue;
                };
                types.insert(q);
                if let Some(to) = q.runs_as().filter(|&to| to != q) {
                    let mut got = vec![0f32; want.len()];
                    to.dequantize(&q.transcode(raw), &mut got);
                    for (i, (x, w)) in got.iter().zip(want).enumerate() {
                        assert_eq!(x.to_bits(), w.to_bits(), "{stem} {name} as {to:?}[{i}]");
                    }
                }
            }
            assert_eq!(at, expected.len(), "{stem}");
        }
        assert!(
            files >= 9,
            "{files} fixture files in {}",
            fixtures.display()
        );
        for q in [
            QuantFormat::Q4_K,
            QuantFormat::Q5_K,
            QuantFormat::Q6_K,
            QuantFormat::Q3_K,
            QuantFormat::Q2_K,
            QuantFormat::IQ4_XS,
            QuantFormat::IQ4_NL,
            QuantFormat::Q5_0,
            QuantFormat::Q5_1,
        ] {
            assert!(types.contains(&q), "no fixture tensor of {q:?}");
        }
    }

    /// Cross-check against llama.cpp's own Python writer and reference dequantizers. Skipped, with
    /// a note, when python3 or its `gguf`/`numpy` packages are unavailable, except under CI
    /// (`CI=true`), which installs them (the test extras) and must run the check, so there it fails.
    #[test]
    fn matches_gguf_py_writer_and_dequantizers() {
        const SCRIPT: &str = r#"
import sys
try:
    import numpy as np
    import gguf
    from gguf.quants import quantize, dequantize
except ImportError as e:
    print(f"import failed: {e}", file=sys.stderr)
    sys.exit(3)
T = gguf.GGMLQuantizationType
out = sys.argv[1]
rng = np.random.default_rng(0)
w = gguf.GGUFWriter(out + "/py.gguf", "llama")
w.add_custom_alignment(64)
w.add_uint32("test.u32", 7)
w.add_float32("test.f32", 0.5)
w.add_string("test.str", "hi")
w.add_array("test.arr", [1, 2, 3])
w.add_array("test.strs", ["a", "bc"])
w.add_bool("test.bool", True)
expected = []
for name, qt, shape in [("q4_0", T.Q4_0, (3, 64)), ("q4_1", T.Q4_1, (2, 96)),
                        ("q8_0", T.Q8_0, (4, 32)), ("f16", T.F16, (5, 7)),
                        ("bf16", T.BF16, (3, 5)), ("f32", T.F32, (2, 3))]:
    x = rng.standard_normal(shape).astype(np.float32)
    data = quantize(x, qt)
    w.add_tensor(name, data, raw_dtype=qt)
    expected.append(np.asarray(dequantize(data, qt), dtype="<f4").ravel())
# gguf-py cannot quantize to these; random bytes with realistic f16 scales (at these byte offsets
# of each block) exercise every bit of the layouts against its reference dequantizers.
for name, qt, shape, f16_at in [("q5_0", T.Q5_0, (3, 64), [0]), ("iq4_nl", T.IQ4_NL, (2, 96), [0]),
                                ("q4_k", T.Q4_K, (2, 512), [0, 2]), ("q6_k", T.Q6_K, (3, 256), [208]),
                                ("q5_1", T.Q5_1, (3, 64), [0, 2]), ("q5_k", T.Q5_K, (2, 512), [0, 2]),
                                ("q3_k", T.Q3_K, (3, 256), [108]), ("q2_k", T.Q2_K, (2, 512), [80, 82]),
                                ("iq4_xs", T.IQ4_XS, (3, 256), [0])]:
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qt]
    blocks = rng.integers(0, 256, (shape[0] * shape[1] // block_values, block_bytes), dtype=np.uint8)
    for at in f16_at:
        scales = (rng.standard_normal(len(blocks)) * 0.01).astype(np.float16)
        blocks[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    data = blocks.reshape(shape[0], -1)
    w.add_tensor(name, data, raw_dtype=qt)
    expected.append(np.asarray(dequantize(data, qt), dtype="<f4").ravel())
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
np.concatenate(expected).tofile(out + "/expected.f32")
"#;
        let dir = tmp_path("python").parent().unwrap().to_path_buf();
        let run = std::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&dir)
            .output();
        let out = match run {
            Ok(out) => out,
            Err(e) => return skip_outside_ci(&format!("cannot run python3 ({e})")),
        };
        if out.status.code() == Some(3) {
            let why = String::from_utf8_lossy(&out.stderr);
            return skip_outside_ci(&format!("python3 lacks gguf/numpy ({})", why.trim()));
        }
        assert!(
            out.status.success(),
            "gguf-py script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = GgufFile::open(&dir.join("py.gguf")).unwrap();
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.get("test.u32"), Some(MetaValue::U32(7)));
        assert_eq!(f.get("test.f32"), Some(MetaValue::F32(0.5)));
        assert_eq!(f.get("test.str").and_then(MetaValue::as_str), Some("hi"));
        let arr: Vec<i64> = f
            .get("test.arr")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(arr, [1, 2, 3]);
        let strs = f.get("test.strs").unwrap().as_array().unwrap();
        assert_eq!(strs.get(1).unwrap().as_str(), Some("bc"));
        assert_eq!(f.get("test.bool"), Some(MetaValue::Bool(true)));

        let bytes = std::fs::read(dir.join("expected.f32")).unwrap();
        let expected: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut at = 0;
        for (name, ty, shape) in [
            ("q4_0", Q4_0, [3, 64]),
            ("q4_1", Q4_1, [2, 96]),
            ("q8_0", Q8_0, [4, 32]),
            ("f16", GgmlType::F16, [5, 7]),
            ("bf16", GgmlType::BF16, [3, 5]),
            ("f32", GgmlType::F32, [2, 3]),
            ("q5_0", GgmlType::Quant(QuantFormat::Q5_0), [3, 64]),
            ("iq4_nl", GgmlType::Quant(QuantFormat::IQ4_NL), [2, 96]),
            ("q4_k", GgmlType::Quant(QuantFormat::Q4_K), [2, 512]),
            ("q6_k", GgmlType::Quant(QuantFormat::Q6_K), [3, 256]),
            ("q5_1", GgmlType::Quant(QuantFormat::Q5_1), [3, 64]),
            ("q5_k", GgmlType::Quant(QuantFormat::Q5_K), [2, 512]),
            ("q3_k", GgmlType::Quant(QuantFormat::Q3_K), [3, 256]),
            ("q2_k", GgmlType::Quant(QuantFormat::Q2_K), [2, 512]),
            ("iq4_xs", GgmlType::Quant(QuantFormat::IQ4_XS), [3, 256]),
        ] {
            let info = f.tensor_info(name).unwrap();
            assert_eq!(info.ggml_type, ty, "{name}");
            let t = f.tensor(name).unwrap();
            assert_eq!(t.shape(), &shape, "{name}");
            let want = &expected[at..at + t.numel()];
            at += t.numel();
            for (i, (x, w)) in t.data().iter().zip(want).enumerate() {
                assert_eq!(x.to_bits(), w.to_bits(), "{name}[{i}]: {x} vs {w}");
            }
            // A type run as another (IQ4_NL as Q8_0) converts to blocks with the same values.
            if let GgmlType::Quant(q) = ty {
                if let Some(to) = q.runs_as().filter(|&to| to != q) {
                    let blocks = q.transcode(f.raw(name).unwrap().1);
                    let mut got = vec![0f32; want.len()];
                    to.dequantize(&blocks, &mut got);
                    for (i, (x, w)) in got.iter().zip(want).enumerate() {
                        assert_eq!(
                            x.to_bits(),
                            w.to_bits(),
                            "{name} as {to:?}[{i}]: {x} vs {w}"
                        );
                    }
                }
            }
        }
        assert_eq!(at, expected.len());
    }
}
