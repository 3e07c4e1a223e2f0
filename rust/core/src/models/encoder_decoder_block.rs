//! The attention sublayers of the encoder-decoder stacks (T5 and the BART family): self-attention
//! over the encoder input or the decoder's cache, and the decoder's cross-attention to the encoder
//! memory. The stacks load them (names, biases and shapes are theirs), pick the scale and the
//! position bias, and arrange the norms and residuals around them.

use super::attention::{Attention, KeyValues};
use super::encoder_decoder::EncoderMemory;
use super::kv_cache::KvCache;
use super::session::StepBuffers;
use super::TokenBatch;
use crate::error::Result;
use crate::tensor::{Linear, LinearSet};

pub(crate) struct SelfAttention {
    /// `[q | k | v]`, stacked into one product.
    pub qkv: LinearSet,
    pub o: Linear,
}

impl SelfAttention {
    /// The encoder's: attends from `x` (`input.batch` inputs of `input.len` positions) to itself,
    /// never to the input's padding, with `attn`'s heads, scale and bias. The output projection
    /// lands in `out`, through the caller's `ctx` (`[batch * len, heads * head_dim]`).
    pub fn encode(
        &self,
        attn: &Attention,
        x: &[f32],
        input: &TokenBatch,
        ctx: &mut [f32],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (b, l) = (input.batch, input.len);
        let (m, width, interrupt) = (b * l, attn.heads * attn.head_dim, attn.interrupt);
        let mut y = Vec::new();
        self.qkv.forward_checked(x, m, &mut y, interrupt)?;
        let [q, k, v]: [Vec<f32>; 3] = self.qkv.split(&y, m).try_into().expect("q, k, v");
        let kv = KeyValues {
            k: &k,
            v: &v,
            row_stride: l * width,
            head_stride: attn.head_dim,
            pos_stride: width,
            len: l,
            mask: Some((&input.mask, l)),
            row_map: None,
        };
        attn.run(&q, b, l, &kv, ctx);
        self.o.forward_checked(ctx, m, out, interrupt)
    }

    /// The decoder's: attends from the normalised input `b.x` (`cache.rows()` rows of `n`
    /// positions) with `attn`, writing layer `layer`'s keys and values into `cache`. The output
    /// projection lands in `b.proj`.
    pub fn step(
        &self,
        attn: &Attention,
        layer: usize,
        n: usize,
        cache: &mut KvCache,
        b: &mut StepBuffers,
    ) -> Result<()> {
        let rows = cache.rows();
        let m = rows * n;
        b.project_qkv(&self.qkv, m, attn.interrupt)?;
        cache.write(layer, &b.k, &b.v);
        attn.run(&b.q, rows, n, &cache.view(layer), &mut b.ctx);
        self.o
            .forward_checked(&b.ctx, m, &mut b.proj, attn.interrupt)
    }

    pub fn weight_bytes(&self) -> usize {
        self.qkv.weight_bytes() + self.o.weight_bytes()
    }
}

pub(crate) struct CrossAttention {
    pub q: Linear,
    /// `[k | v]` of the encoder output, computed once per input (see [`EncoderMemory`]).
    pub kv: LinearSet,
    pub o: Linear,
}

impl CrossAttention {
    /// Attends from the normalised decoder input `b.x` (`rows` rows of `n` positions) to layer
    /// `layer`'s encoder memory with `attn`. The output projection lands in `b.proj`.
    pub fn step(
        &self,
        attn: &Attention,
        memory: &EncoderMemory,
        layer: usize,
        rows: usize,
        n: usize,
        b: &mut StepBuffers,
    ) -> Result<()> {
        let m = rows * n;
        self.q.forward_checked(&b.x, m, &mut b.q, attn.interrupt)?;
        attn.run(&b.q, rows, n, &memory.key_values(layer), &mut b.ctx);
        self.o
            .forward_checked(&b.ctx, m, &mut b.proj, attn.interrupt)
    }

    /// The projections a decoding step streams: `kv` is not one of them (its products are the
    /// memory, made at `start`).
    pub fn step_weight_bytes(&self) -> usize {
        self.q.weight_bytes() + self.o.weight_bytes()
    }
}
