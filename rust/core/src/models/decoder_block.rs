//! The sublayers of the rotary decoders' blocks (the Llama family and Gemma): self-attention with
//! grouped-query heads, optional per-head q/k RMSNorms, rotary positions and a sliding window; and
//! the gated feed-forward `down(act(gate x) * up x)`. The blocks arrange them (Gemma adds norms
//! after each), and pick their options from their configs.

use super::attention::Attention;
use super::checkpoint::linear;
use super::gated_into;
use super::kv_cache::KvCache;
use super::rope::{Rope, RopeAngles};
use super::session::StepBuffers;
use crate::error::Result;
use crate::formats::WeightSource;
use crate::interrupt::Interrupt;
use crate::tensor::{Linear, LinearSet};

/// The projections `{prefix}.{name}` of `parts` (`(name, outputs)`) stacked for one product, or,
/// with `fused` (Phi-3's `qkv_proj`, `gate_up_proj`), the one projection `{prefix}.{fused}` that
/// holds them all in that order.
pub(crate) fn stacked_projections(
    w: &dyn WeightSource,
    prefix: &str,
    d: usize,
    parts: &[(&str, usize)],
    fused: Option<&str>,
    bias: bool,
) -> Result<LinearSet> {
    let linears = match fused {
        Some(name) => {
            let out = parts.iter().map(|(_, out)| out).sum();
            vec![linear(w, &format!("{prefix}.{name}"), out, d, bias)?]
        }
        None => parts
            .iter()
            .map(|(name, out)| linear(w, &format!("{prefix}.{name}"), *out, d, bias))
            .collect::<Result<_>>()?,
    };
    LinearSet::new(linears)
}

/// The RMSNorms over each head of q and of k before the rotation (Qwen3, Gemma 3).
pub(crate) struct QkNorm {
    /// The factors each head is multiplied by, `[head_dim]` each.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub eps: f32,
}

pub(crate) struct SelfAttention {
    /// `[q | k | v]` (see [`stacked_projections`]).
    pub qkv: LinearSet,
    /// `qkv` is one fused projection, split after the product.
    pub fused: bool,
    pub qk_norm: Option<QkNorm>,
    pub o: Linear,
    /// This layer's sliding window (`None`: it sees every earlier position).
    pub window: Option<usize>,
}

impl SelfAttention {
    /// Attends from the normalised input `b.x` (`cache.rows()` rows of `n` positions) with `base`'s
    /// heads, scale and options (the window is this layer's), rotating q and k by `rope` (the
    /// rotation and this step's angles; `None`: a layer without rotary positions) and writing
    /// layer `layer`'s keys and values into `cache`. The output projection lands in `b.proj`.
    pub fn forward(
        &self,
        base: &Attention,
        rope: Option<(&Rope, &RopeAngles)>,
        layer: usize,
        n: usize,
        cache: &mut KvCache,
        b: &mut StepBuffers,
    ) -> Result<()> {
        let rows = cache.rows();
        let (m, interrupt) = (rows * n, base.interrupt);
        if self.fused {
            let (q_w, kv_w) = (base.heads * base.head_dim, base.kv_heads * base.head_dim);
            b.project_fused_qkv(&self.qkv, [q_w, kv_w], m, interrupt)?;
        } else {
            b.project_qkv(&self.qkv, m, interrupt)?;
        }
        if let Some(norm) = &self.qk_norm {
            b.norm_qk_heads(&norm.q, &norm.k, norm.eps);
        }
        if let Some((rope, angles)) = rope {
            rope.apply_angles(&mut b.q, base.heads, angles);
            rope.apply_angles(&mut b.k, base.kv_heads, angles);
        }
        cache.write(layer, &b.k, &b.v);
        let attn = Attention {
            window: self.window,
            ..*base
        };
        attn.run(&b.q, rows, n, &cache.view(layer), &mut b.ctx);
        self.o.forward_checked(&b.ctx, m, &mut b.proj, interrupt)
    }

    pub fn weight_bytes(&self) -> usize {
        self.qkv.weight_bytes() + self.o.weight_bytes()
    }
}

pub(crate) struct GatedMlp {
    /// `[gate | up]` (see [`stacked_projections`]); a fused one's halves are transformers'
    /// `chunk(2)`, as `gated_into` takes them.
    pub gate_up: LinearSet,
    pub down: Linear,
}

/// The feed-forward's step buffers: `[gate | up]` and the gated product.
#[derive(Default)]
pub(crate) struct MlpScratch {
    gate_up: Vec<f32>,
    gated: Vec<f32>,
}

impl GatedMlp {
    /// `out` ← `down(act(gate x) * up x)` of the `m` rows of `x`, unless interrupted.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        act: impl Fn(&mut [f32]),
        s: &mut MlpScratch,
        out: &mut Vec<f32>,
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        self.gate_up
            .forward_checked(x, m, &mut s.gate_up, interrupt)?;
        gated_into(&s.gate_up, m, act, &mut s.gated);
        self.down.forward_checked(&s.gated, m, out, interrupt)
    }

    pub fn weight_bytes(&self) -> usize {
        self.gate_up.weight_bytes() + self.down.weight_bytes()
    }
}
