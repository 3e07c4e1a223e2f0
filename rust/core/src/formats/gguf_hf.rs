//! A GGUF file seen under transformers' tensor names, so the model files (which speak transformers'
//! names only) load GGUF and safetensors alike.
//!
//! llama.cpp's converter permutes the rows of Llama's q/k projections per head (ggml rotates
//! adjacent pairs; transformers rotates dimension `i` with `i + head_dim/2`); this source undoes
//! that permutation, as transformers does when it reads a GGUF, so one rotary kernel serves both.
//! With `keep_quantized`, projections of a block type the quantized kernels run (Q4_0/Q4_1/Q5_0/Q8_0,
//! ...: [`has_kernels`](crate::kernels::quant::QuantFormat::has_kernels)) stay in their blocks for
//! those kernels, and those of a type whose blocks convert exactly into such a type (IQ4_NL: Q8_0,
//! see [`runs_as`](crate::kernels::quant::QuantFormat::runs_as)) are converted at load;
//! everything else is dequantized to f32.

use super::gguf::{GgmlType, GgufFile};
use super::WeightSource;
use crate::error::Result;
use crate::format_err;
use crate::models::gemma::GGUF_NORMS_PLUS_ONE;
use crate::tensor::{Bytes, QuantRows, Tensor, Weight};

pub struct GgufAsHf {
    file: GgufFile,
    /// llama.cpp permuted q/k rows (the architecture registry says for which files).
    permuted_qk: bool,
    n_head: usize,
    n_kv_head: usize,
    keep_quantized: bool,
    /// Gemma's layout: its own norm names, and norm weights stored as `1 + w`
    /// ([`crate::models::gemma::GGUF_NORMS_PLUS_ONE`]).
    gemma: bool,
}

/// How the rows of a tensor must be reordered to reach transformers' layout.
#[derive(Clone, Copy)]
enum Rows {
    AsStored,
    /// Undo llama.cpp's per-head permutation for this many heads.
    Unpermute(usize),
}

impl GgufAsHf {
    /// `permuted_qk`: the file's q/k rows are in llama.cpp's per-head order (`n_head` query and
    /// `n_kv_head` key heads), to be put back into transformers'.
    pub fn new(
        file: GgufFile,
        permuted_qk: bool,
        n_head: usize,
        n_kv_head: usize,
        keep_quantized: bool,
    ) -> Self {
        let gemma = file
            .architecture()
            .is_some_and(|a| GGUF_NORMS_PLUS_ONE.contains(&a));
        GgufAsHf {
            gemma,
            file,
            permuted_qk,
            n_head,
            n_kv_head,
            keep_quantized,
        }
    }

    /// The GGUF name of a transformers name, and its row order.
    fn locate(&self, hf: &str) -> Option<(String, Rows)> {
        let fixed = match hf {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(name) = fixed {
            return Some((name.to_string(), Rows::AsStored));
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, leaf) = rest.split_once('.')?;
        let (module, suffix) = leaf.rsplit_once('.')?; // suffix: weight | bias
        if self.gemma {
            if let Some(gguf) = gemma_norm(module) {
                return Some((format!("blk.{layer}.{gguf}.{suffix}"), Rows::AsStored));
            }
        }
        let (gguf, rows) = match module {
            "input_layernorm" => ("attn_norm", Rows::AsStored),
            "post_attention_layernorm" => ("ffn_norm", Rows::AsStored),
            "self_attn.q_proj" if self.permuted_qk => ("attn_q", Rows::Unpermute(self.n_head)),
            "self_attn.k_proj" if self.permuted_qk => ("attn_k", Rows::Unpermute(self.n_kv_head)),
            "self_attn.q_proj" => ("attn_q", Rows::AsStored),
            "self_attn.k_proj" => ("attn_k", Rows::AsStored),
            "self_attn.v_proj" => ("attn_v", Rows::AsStored),
            "self_attn.o_proj" => ("attn_output", Rows::AsStored),
            "mlp.gate_proj" => ("ffn_gate", Rows::AsStored),
            "mlp.up_proj" => ("ffn_up", Rows::AsStored),
            "mlp.down_proj" => ("ffn_down", Rows::AsStored),
            // Qwen3's per-head norms.
            "self_attn.q_norm" => ("attn_q_norm", Rows::AsStored),
            "self_attn.k_norm" => ("attn_k_norm", Rows::AsStored),
            // Phi-3's fused projections (llama.cpp keeps them fused; its ffn_up is [gate | up]).
            "self_attn.qkv_proj" => ("attn_qkv", Rows::AsStored),
            "mlp.gate_up_proj" => ("ffn_up", Rows::AsStored),
            _ => return None,
        };
        Some((format!("blk.{layer}.{gguf}.{suffix}"), rows))
    }

    /// `<file>: tensor '<name>'`, to begin messages about one of the file's tensors.
    fn describe(&self, gguf: &str) -> String {
        format!("{}: tensor '{gguf}'", self.file.path().display())
    }

    fn resolve(&self, hf: &str) -> Result<(String, Rows)> {
        self.locate(hf).ok_or_else(|| {
            format_err!(
                "{}: no GGUF tensor corresponds to '{hf}'",
                self.file.path().display()
            )
        })
    }
}

/// The GGUF name of a Gemma layer's norm (Gemma's `post_attention_layernorm` follows the
/// attention, where Llama's of the same name precedes the feed-forward).
fn gemma_norm(module: &str) -> Option<&'static str> {
    Some(match module {
        "post_attention_layernorm" => "post_attention_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        _ => return None,
    })
}

/// transformers row `r` of a permuted projection comes from GGUF row `source_row(r)`.
fn source_row(r: usize, rows: usize, heads: usize) -> usize {
    let hd = rows / heads;
    let (h, within) = (r / hd, r % hd);
    let (s, i) = (within / (hd / 2), within % (hd / 2));
    h * hd + 2 * i + s
}

/// Reorders `rows` equal chunks of `data` into transformers' order. The sizes come from the file,
/// so every one is checked: the rows must split into `heads` heads of even, nonzero size and
/// `data` into that many nonempty rows. `name` is the tensor's, with the file, for messages.
fn unpermute<T: Copy>(data: &[T], rows: usize, heads: usize, name: &str) -> Result<Vec<T>> {
    if heads == 0 || rows == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(format_err!(
            "{name}: {rows} rows cannot be split into {heads} heads of even, nonzero size"
        ));
    }
    if data.is_empty() || !data.len().is_multiple_of(rows) {
        return Err(format_err!(
            "{name}: {} values (or bytes) do not form {rows} nonempty rows",
            data.len()
        ));
    }
    let row_len = data.len() / rows;
    let mut out = data.to_vec();
    for (r, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let src = source_row(r, rows, heads);
        dst.copy_from_slice(&data[src * row_len..(src + 1) * row_len]);
    }
    Ok(out)
}

impl WeightSource for GgufAsHf {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let (gguf, rows) = self.resolve(name)?;
        let t = self.file.tensor(&gguf)?;
        if self.gemma && gguf.ends_with("norm.weight") {
            // Back to transformers' `w`, as its GGUF loader does (`weights - 1`, in f32).
            let data = t.data().iter().map(|x| x - 1.0).collect();
            return Tensor::from_vec(t.shape().to_vec(), data);
        }
        match rows {
            Rows::AsStored => Ok(t),
            Rows::Unpermute(heads) => {
                let shape = t.shape().to_vec();
                // A scalar has no rows: report it like any other shape that does not split.
                let rows = shape.first().copied().unwrap_or(0);
                let data = unpermute(t.data(), rows, heads, &self.describe(&gguf))?;
                Tensor::from_vec(shape, data)
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.locate(name)
            .is_some_and(|(gguf, _)| self.file.contains(&gguf))
    }

    fn weight(&self, name: &str) -> Result<Weight> {
        let (gguf, rows) = self.resolve(name)?;
        let (info, bytes) = self.file.shared_bytes(&gguf)?;
        let stored = match info.ggml_type {
            GgmlType::Quant(f)
                if self.keep_quantized && info.shape.len() == 2 && f.runs_as().is_some() =>
            {
                f
            }
            _ => return Ok(Weight::F32(self.tensor(name)?)),
        };
        let (r, c) = (info.shape[0], info.shape[1]);
        // Kept as stored, in the mapping: a projection packs (and converts) it when it is built,
        // an embedding table is read row by row from the file.
        let bytes = match rows {
            Rows::AsStored => bytes,
            Rows::Unpermute(heads) => {
                let rows = unpermute(bytes.as_slice(), r, heads, &self.describe(&gguf))?;
                bytes.release_mapped_pages();
                Bytes::Owned(std::sync::Arc::new(rows))
            }
        };
        Ok(Weight::Table(QuantRows::new(stored, r, c, bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of llama.cpp's `permute`: reshape(heads, 2, hd/2).swapaxes(1, 2).
    #[test]
    fn source_row_inverts_llama_cpp_permutation() {
        let (heads, hd) = (3, 8);
        let rows = heads * hd;
        // llama.cpp: GGUF row (h, i, s) holds transformers row (h, s, i).
        let mut gguf_holds = vec![0; rows];
        for h in 0..heads {
            for s in 0..2 {
                for i in 0..hd / 2 {
                    gguf_holds[h * hd + 2 * i + s] = h * hd + s * (hd / 2) + i;
                }
            }
        }
        for r in 0..rows {
            assert_eq!(gguf_holds[source_row(r, rows, heads)], r);
        }
    }

    #[test]
    fn unpermute_rejects_sizes_that_do_not_split() {
        let data = [0f32; 8];
        for (data, rows, heads) in [
            (&data[..], 0, 1),  // zero rows: was a division by zero
            (&data[..0], 0, 2), // zero-size tensor
            (&data[..0], 4, 2), // rows but no data
            (&data[..], 4, 0),  // zero heads
            (&data[..], 6, 2),  // odd head size
            (&data[..7], 4, 2), // data not a whole number of rows
        ] {
            let err = unpermute(data, rows, heads, "blk.0.attn_q.weight")
                .unwrap_err()
                .to_string();
            assert!(err.contains("blk.0.attn_q.weight"), "{err}");
        }
        assert_eq!(unpermute(&[0, 1, 2, 3], 4, 1, "q").unwrap(), [0, 2, 1, 3]);
    }
}
