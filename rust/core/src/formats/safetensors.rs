//! Reader for the safetensors format, single file or sharded.
//!
//! Layout: `u64` little-endian header size `N`, `N` bytes of JSON mapping each tensor name to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the byte after the header),
//! then the data. The files come from strangers, so the header is held to the rules the format's
//! own library enforces before anything is read through it: a header of at most 100 MB that is a
//! JSON object, no name given twice, each tensor's byte range exactly its dtype x shape (checked
//! arithmetic), and the ranges, in order, tiling the data section from its first byte to its last
//! with no gap or overlap. A truncated file, a corrupt header length or hand-edited offsets thus
//! fail with a message instead of reading the wrong bytes (or none) as weights.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::WeightSource;
use crate::error::{Error, Result};
use crate::format_err;
use crate::tensor::Tensor;

/// The safetensors library's own limit (`MAX_HEADER_SIZE`): real headers are a few hundred KiB.
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

/// One tensor's header entry as written. Deriving `Deserialize` refuses a key given twice inside
/// it (which `serde_json::Value` would silently collapse to the last).
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// A header's tensor entries in file order, every name once (`__metadata__` set aside).
struct Header(Vec<(String, RawEntry)>);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = Header;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }

            // A map read entry by entry: a JSON object into a HashMap keeps the last of two equal
            // keys without a word, and a second entry for a name is exactly what must be refused.
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Header, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !seen.insert(name.clone()) {
                        return Err(de::Error::custom(format!("'{name}' is listed twice")));
                    }
                    if name == "__metadata__" {
                        // Free text for the writer's use, but of the one shape the format allows.
                        map.next_value::<HashMap<String, String>>().map_err(|e| {
                            de::Error::custom(format!(
                                "__metadata__ must map strings to strings: {e}"
                            ))
                        })?;
                        continue;
                    }
                    let entry = map
                        .next_value::<RawEntry>()
                        .map_err(|e| de::Error::custom(format!("tensor '{name}': {e}")))?;
                    entries.push((name, entry));
                }
                Ok(Header(entries))
            }
        }
        d.deserialize_map(HeaderVisitor)
    }
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    begin: usize,
    end: usize,
}

pub struct SafeTensors {
    paths: Vec<PathBuf>,
    maps: Vec<Arc<Mmap>>,
    entries: HashMap<String, Entry>,
}

impl SafeTensors {
    /// Opens one or more safetensors files (the shards of one model) as a single tensor namespace.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            return Err(format_err!("no safetensors files given"));
        }
        let mut st = SafeTensors {
            paths: Vec::new(),
            maps: Vec::new(),
            entries: HashMap::new(),
        };
        for path in paths {
            st.add_file(path)?;
        }
        Ok(st)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only; like every mmap-based loader we assume the file is not
        // truncated by another process while the model is alive.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let name = path.display();
        let entries = parse_header(&map).map_err(|msg| format_err!("{name}: {msg}"))?;
        let file_index = self.maps.len();
        for (tensor, entry) in entries {
            let entry = Entry {
                file: file_index,
                ..entry
            };
            if self.entries.insert(tensor.clone(), entry).is_some() {
                return Err(format_err!(
                    "{name}: tensor '{tensor}' appears in more than one shard"
                ));
            }
        }
        self.paths.push(path.to_path_buf());
        self.maps.push(Arc::new(map));
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }
}

/// Checks a whole file's header against the file; each tensor's entry (`file` left 0 for the
/// caller) with its name.
fn parse_header(file: &[u8]) -> std::result::Result<Vec<(String, Entry)>, String> {
    let file_len = file.len() as u64;
    let Some(length_bytes) = file.first_chunk::<8>() else {
        return Err(format!("not a safetensors file (only {file_len} bytes)"));
    };
    // Not echoed when absurd: read from a file that is not safetensors, these are its first 8
    // bytes, which are no business of an error message.
    let header_len = u64::from_le_bytes(*length_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "not a safetensors file: its header length exceeds the format's limit of {MAX_HEADER_BYTES} bytes"
        ));
    }
    if header_len > file_len - 8 {
        return Err(format!(
            "corrupt or truncated safetensors file: header length {header_len} exceeds the file size ({file_len} bytes)"
        ));
    }
    let data_start = 8 + header_len as usize;
    let text = &file[8..data_start];
    if text.first() != Some(&b'{') {
        return Err("not a safetensors file: the header is not a JSON object".into());
    }
    let Header(raw) = serde_json::from_slice(text)
        .map_err(|e| format!("safetensors header is not valid JSON: {e}"))?;
    let data_len = file.len() - data_start;
    let mut entries = raw
        .into_iter()
        .map(|(tensor, r)| {
            let entry = parse_entry(&r, data_start, data_len)
                .map_err(|msg| format!("tensor '{tensor}': {msg}"))?;
            Ok((tensor, entry))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    check_tiling(&mut entries, data_start, data_len)?;
    Ok(entries)
}

fn parse_entry(
    r: &RawEntry,
    data_start: usize,
    data_len: usize,
) -> std::result::Result<Entry, String> {
    let dtype = Dtype::parse(&r.dtype).ok_or_else(|| {
        format!(
            "unsupported dtype {} (fasttx reads F32, F16 and BF16)",
            r.dtype
        )
    })?;
    let too_large = || "shape overflows".to_string();
    let shape: Vec<usize> = r
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_large()))
        .collect::<std::result::Result<_, _>>()?;
    let (begin, end) = r.data_offsets;
    let (begin, end) = (
        usize::try_from(begin).unwrap_or(usize::MAX),
        usize::try_from(end).unwrap_or(usize::MAX),
    );
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    if begin > end || end > data_len {
        return Err(format!(
            "data range {begin}..{end} lies outside the file's {data_len} data bytes (truncated file?)"
        ));
    }
    if end - begin != bytes {
        return Err(format!(
            "shape {shape:?} of {} needs {bytes} bytes, data range holds {}",
            r.dtype,
            end - begin
        ));
    }
    Ok(Entry {
        file: 0,
        dtype,
        shape,
        begin: data_start + begin,
        end: data_start + end,
    })
}

/// The tensors' byte ranges, in order, must cover the data section exactly once: an overlap lets
/// two tensors alias the same bytes, and a gap or a shortfall at the end means the header does not
/// describe this data (a corrupt header length shifts every range by the difference).
fn check_tiling(
    entries: &mut [(String, Entry)],
    data_start: usize,
    data_len: usize,
) -> std::result::Result<(), String> {
    entries.sort_by_key(|(_, e)| (e.begin, e.end));
    let mut covered = 0;
    let mut previous: Option<&str> = None;
    for (tensor, e) in entries.iter() {
        let begin = e.begin - data_start;
        if begin < covered {
            return Err(format!(
                "tensors '{}' and '{tensor}' overlap (data_offsets reuse bytes {begin}..{covered})",
                previous.unwrap_or_default()
            ));
        }
        if begin > covered {
            return Err(format!(
                "data bytes {covered}..{begin} belong to no tensor (data_offsets are not contiguous)"
            ));
        }
        covered = e.end - data_start;
        previous = Some(tensor);
    }
    if covered != data_len {
        return Err(format!(
            "the tensors cover {covered} of the {data_len} data bytes (corrupt header length or data_offsets)"
        ));
    }
    Ok(())
}

impl WeightSource for SafeTensors {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let e = self.entries.get(name).ok_or_else(|| {
            format_err!(
                "tensor '{name}' is missing from {}",
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let map = &self.maps[e.file];
        let bytes = &map[e.begin..e.end];
        match e.dtype {
            Dtype::F32 if e.begin % 4 == 0 => {
                Ok(Tensor::mapped(e.shape.clone(), map.clone(), e.begin))
            }
            Dtype::F32 => {
                let v = convert(bytes, 4, |b| f32::from_le_bytes(b.try_into().unwrap()));
                Tensor::from_vec(e.shape.clone(), v)
            }
            Dtype::F16 => {
                let v = convert(bytes, 2, |b| f16::from_le_bytes([b[0], b[1]]).to_f32());
                Tensor::from_vec(e.shape.clone(), v)
            }
            Dtype::BF16 => {
                let v = convert(bytes, 2, |b| bf16::from_le_bytes([b[0], b[1]]).to_f32());
                Tensor::from_vec(e.shape.clone(), v)
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// Stored values of `width` bytes each, converted to f32 into a weight buffer.
fn convert(bytes: &[u8], width: usize, f: impl Fn(&[u8]) -> f32) -> Vec<f32> {
    let mut v = crate::memory::weight_buffer(bytes.len() / width);
    for (o, b) in v.iter_mut().zip(bytes.chunks_exact(width)) {
        *o = f(b);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a safetensors file by hand: `(name, dtype, shape, bytes)`.
    fn write(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
            );
        }
        let mut h = serde_json::to_vec(&header).unwrap();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&h);
        file.extend_from_slice(&data);
        std::fs::write(path, file).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fasttx-st-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("model.safetensors")
    }

    #[test]
    fn reads_f32_mapped_and_converts_f16_bf16() {
        let path = tmp("dtypes");
        let vals = [1.5f32, -2.25, 0.0, 3.0e-3];
        let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16_bytes: Vec<u8> = vals
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        write(
            &path,
            &[
                ("a", "F32", vec![2, 2], f32_bytes),
                ("b", "F16", vec![4], f16_bytes),
                ("c", "BF16", vec![4], bf16_bytes),
            ],
        );
        let st = SafeTensors::open(&[path]).unwrap();
        let a = st.tensor("a").unwrap();
        assert!(a.is_mapped());
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(a.data(), &vals);
        let b = st.tensor("b").unwrap();
        for (x, v) in b.data().iter().zip(vals) {
            assert_eq!(*x, f16::from_f32(v).to_f32());
        }
        let c = st.tensor("c").unwrap();
        for (x, v) in c.data().iter().zip(vals) {
            assert_eq!(*x, bf16::from_f32(v).to_f32());
        }
        assert!(
            matches!(st.tensor("zzz"), Err(Error::Format(m)) if m.contains("'zzz' is missing"))
        );
    }

    #[test]
    fn rejects_inconsistent_headers() {
        let path = tmp("bad-size");
        write(&path, &[("a", "F32", vec![3], vec![0; 8])]);
        let err = SafeTensors::open(&[path]).err().unwrap().to_string();
        assert!(
            err.contains("'a'") && err.contains("needs 12 bytes"),
            "{err}"
        );

        let path = tmp("bad-dtype");
        write(&path, &[("a", "I64", vec![1], vec![0; 8])]);
        let err = SafeTensors::open(&[path]).err().unwrap().to_string();
        assert!(err.contains("unsupported dtype I64"), "{err}");

        let path = tmp("overflow");
        write(&path, &[("a", "F32", vec![usize::MAX / 2, 4], vec![0; 8])]);
        let err = SafeTensors::open(&[path]).err().unwrap().to_string();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn rejects_truncated_data() {
        let path = tmp("truncated");
        write(&path, &[("a", "F32", vec![4], vec![0; 16])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = SafeTensors::open(&[path]).err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    /// Writes a header given as text, then `data`.
    fn write_raw(path: &Path, header: &str, data: &[u8]) {
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(data);
        std::fs::write(path, file).unwrap();
    }

    fn open_err(path: PathBuf) -> String {
        SafeTensors::open(&[path]).err().unwrap().to_string()
    }

    #[test]
    fn rejects_a_name_listed_twice() {
        let path = tmp("duplicate");
        let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        write_raw(&path, &format!(r#"{{"a":{entry},"a":{entry}}}"#), &[0; 4]);
        let err = open_err(path);
        assert!(err.contains("'a' is listed twice"), "{err}");

        let path = tmp("duplicate-field");
        write_raw(
            &path,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"data_offsets":[4,8]}}"#,
            &[0; 8],
        );
        let err = open_err(path);
        assert!(
            err.contains("tensor 'a'") && err.contains("duplicate field"),
            "{err}"
        );
    }

    #[test]
    fn rejects_overlapping_gapped_or_partial_data_offsets() {
        let path = tmp("overlap");
        write_raw(
            &path,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        );
        let err = open_err(path);
        assert!(err.contains("'a' and 'b' overlap"), "{err}");

        let path = tmp("gap");
        write_raw(
            &path,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            &[0; 12],
        );
        let err = open_err(path);
        assert!(err.contains("4..8 belong to no tensor"), "{err}");

        let path = tmp("uncovered-tail");
        write(&path, &[("a", "F32", vec![1], vec![0; 4])]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 4]);
        std::fs::write(&path, bytes).unwrap();
        let err = open_err(path);
        assert!(err.contains("cover 4 of the 8 data bytes"), "{err}");
    }

    #[test]
    fn a_header_length_shortened_into_its_padding_is_refused() {
        // The JSON still parses (it loses trailing spaces), but every tensor would be read
        // shifted by the difference: the tiling check sees the data section grow.
        let path = tmp("short-length");
        write(&path, &[("a", "F32", vec![1], vec![0; 4])]);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let trailing_spaces = bytes[8..8 + len as usize]
            .iter()
            .rev()
            .take_while(|&&b| b == b' ')
            .count();
        assert!(trailing_spaces > 0, "the test needs a padded header");
        bytes[..8].copy_from_slice(&(len - 1).to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let err = open_err(path);
        assert!(err.contains("corrupt header length"), "{err}");
    }

    #[test]
    fn an_absurd_header_length_is_refused_without_echoing_the_bytes() {
        let path = tmp("passwd");
        std::fs::write(&path, b"root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let err = open_err(path);
        let as_number = u64::from_le_bytes(*b"root:x:0").to_string();
        assert!(err.contains("exceeds the format's limit"), "{err}");
        assert!(!err.contains(&as_number), "{err}");

        let path = tmp("long-length");
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, bytes).unwrap();
        let err = open_err(path);
        assert!(
            err.contains("header length 1000 exceeds the file size"),
            "{err}"
        );
    }

    #[test]
    fn rejects_headers_that_are_not_an_object_of_entries() {
        let cases = [
            ("array", "[1, 2]", "not a JSON object"),
            ("trailing", r#"{} x"#, "not valid JSON"),
            (
                "metadata",
                r#"{"__metadata__":{"a":1}}"#,
                "__metadata__ must map strings",
            ),
            (
                "no-offsets",
                r#"{"a":{"dtype":"F32","shape":[0]}}"#,
                "data_offsets",
            ),
            (
                "negative",
                r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
                "tensor 'a'",
            ),
        ];
        for (name, header, want) in cases {
            let path = tmp(name);
            write_raw(&path, header, &[]);
            let err = open_err(path);
            assert!(err.contains(want), "{name}: {err}");
        }
        // Metadata alone, and an empty tensor, are well-formed.
        let path = tmp("empty-ok");
        write_raw(
            &path,
            r#"{"__metadata__":{"format":"pt"},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#,
            &[],
        );
        assert_eq!(
            SafeTensors::open(&[path]).unwrap().shape("e"),
            Some(&[0, 3][..])
        );
    }

    #[test]
    fn missing_file_is_io_not_found() {
        let err = SafeTensors::open(&[PathBuf::from("/nonexistent/x.safetensors")])
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
    }
}
