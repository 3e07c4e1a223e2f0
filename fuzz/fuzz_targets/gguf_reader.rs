//! The GGUF reader on arbitrary bytes: header, metadata, tensor table, every tensor's data
//! (dequantized), and the transformers config built from the metadata.
#![no_main]

use fasttx_core::formats::gguf::{GgufFile, MetaValue};
use fasttx_core::formats::WeightSource;
use fasttx_core::models::registry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = fasttx_fuzz::scratch_file("reader.gguf", data);
    let Ok(file) = GgufFile::open(&path) else {
        return;
    };
    for (_key, value) in file.metadata() {
        read_value(value);
        // Arrays are spans of the file until read: read every element (nested arrays too).
        if let Some(array) = value.as_array() {
            let _ = (array.len(), array.elem_type_name(), array.fixed_width());
            for element in array.iter() {
                read_value(element);
                if let Some(inner) = element.as_array() {
                    inner.iter().for_each(read_value);
                }
            }
        }
    }
    for info in file.tensors() {
        let _ = file.raw(&info.name);
        let _ = file.tensor(&info.name);
    }
    let _ = registry::gguf_config(&file);
});

fn read_value(value: MetaValue<'_>) {
    let _ = (
        value.as_u64(),
        value.as_i64(),
        value.as_f64(),
        value.as_bool(),
        value.as_str(),
        value.type_id(),
        value.type_name(),
    );
}
