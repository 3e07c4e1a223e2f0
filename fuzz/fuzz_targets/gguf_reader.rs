//! The GGUF reader on arbitrary bytes: header, metadata, tensor table, every tensor's data
//! (dequantized), and the transformers config built from the metadata.
#![no_main]

use fasttx_core::formats::gguf::GgufFile;
use fasttx_core::formats::WeightSource;
use fasttx_core::models::registry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = fasttx_fuzz::scratch_file("reader.gguf", data);
    let Ok(file) = GgufFile::open(&path) else {
        return;
    };
    for value in file.metadata().values() {
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f64(),
            value.as_bool(),
        );
        let _ = (value.as_str(), value.as_array(), value.type_name());
    }
    for info in file.tensors() {
        let _ = file.raw(&info.name);
        let _ = file.tensor(&info.name);
    }
    let _ = registry::gguf_config(&file);
});
