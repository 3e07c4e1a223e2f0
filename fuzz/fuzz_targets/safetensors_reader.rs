//! The safetensors reader on arbitrary bytes: header, entry validation, every tensor read as f32.
#![no_main]

use fasttx_core::formats::safetensors::SafeTensors;
use fasttx_core::formats::WeightSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = fasttx_fuzz::scratch_file("reader.safetensors", data);
    let Ok(st) = SafeTensors::open(&[path]) else {
        return;
    };
    let names: Vec<String> = st.names().map(str::to_owned).collect();
    for name in &names {
        let _ = st.shape(name);
        let _ = st.tensor(name);
    }
});
