//! Reader for the safetensors format, single file or sharded.
//!
//! Layout: `u64` little-endian header size `N`, `N` bytes of JSON mapping each tensor name to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the byte after the header),
//! then the data. Every claim in the header is checked against the file before it is used, so a
//! truncated or corrupt file fails with a message instead of reading out of bounds.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use serde_json::Value;

use super::WeightSource;
use crate::error::{Error, Result};
use crate::format_err;
use crate::tensor::Tensor;

/// Larger headers are certainly corrupt (real ones are a few hundred KiB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

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
        let file_len = map.len() as u64;
        if file_len < 8 {
            return Err(format_err!(
                "{name}: not a safetensors file (only {file_len} bytes)"
            ));
        }
        let header_len = u64::from_le_bytes(map[..8].try_into().unwrap());
        if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
            return Err(format_err!(
                "{name}: corrupt or truncated safetensors file (header claims {header_len} bytes, file has {file_len})"
            ));
        }
        let data_start = 8 + header_len as usize;
        let header: HashMap<String, Value> = serde_json::from_slice(&map[8..data_start])
            .map_err(|e| format_err!("{name}: safetensors header is not valid JSON: {e}"))?;
        let data_len = map.len() - data_start;
        let file_index = self.maps.len();
        for (tensor, info) in header {
            if tensor == "__metadata__" {
                continue;
            }
            let entry = parse_entry(&info, file_index, data_start, data_len)
                .map_err(|msg| format_err!("{name}: tensor '{tensor}': {msg}"))?;
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

fn parse_entry(
    info: &Value,
    file: usize,
    data_start: usize,
    data_len: usize,
) -> std::result::Result<Entry, String> {
    let dtype_name = info
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing dtype")?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| {
        format!("unsupported dtype {dtype_name} (fasttx reads F32, F16 and BF16)")
    })?;
    let shape: Vec<usize> = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing shape")?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or("shape holds a non-integer")
        })
        .collect::<std::result::Result<_, _>>()?;
    let offsets = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("missing data_offsets")?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => (
            b.as_u64().ok_or("bad data_offsets")? as usize,
            e.as_u64().ok_or("bad data_offsets")? as usize,
        ),
        _ => return Err("data_offsets must hold two integers".into()),
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let bytes = numel.checked_mul(dtype.size()).ok_or("shape overflows")?;
    if begin > end || end > data_len {
        return Err(format!(
            "data range {begin}..{end} lies outside the file's {data_len} data bytes (truncated file?)"
        ));
    }
    if end - begin != bytes {
        return Err(format!(
            "shape {shape:?} of {dtype_name} needs {bytes} bytes, data range holds {}",
            end - begin
        ));
    }
    Ok(Entry {
        file,
        dtype,
        shape,
        begin: data_start + begin,
        end: data_start + end,
    })
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
        while h.len() % 8 != 0 {
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
