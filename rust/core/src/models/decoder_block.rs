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

/// `{prefix}.q_proj`, `k_proj`, `v_proj` stacked as `[q | k | v]` (one product), or Phi-3's one
/// fused `{prefix}.qkv_proj` (`fused`); `widths`: q's and k's outputs (v is as wide as k).
pub(crate) fn qkv_projections(
    w: &dyn WeightSource,
    prefix: &str,
    d: usize,
    [q_out, kv_out]: [usize; 2],
    bias: bool,
    fused: bool,
) -> Result<LinearSet> {
    let parts = if fused {
        vec![linear(
            w,
            &format!("{prefix}.qkv_proj"),
            q_out + 2 * kv_out,
            d,
            bias,
        )?]
    } else {
        vec![
            linear(w, &format!("{prefix}.q_proj"), q_out, d, bias)?,
            linear(w, &format!("{prefix}.k_proj"), kv_out, d, bias)?,
            linear(w, &format!("{prefix}.v_proj"), kv_out, d, bias)?,
        ]
    };
    LinearSet::new(parts)
}

/// `{prefix}.gate_proj` and `up_proj` stacked as `[gate | up]` (one product), or Phi-3's one fused
/// `{prefix}.gate_up_proj` (`fused`, whose halves `gated_into` takes as transformers' `chunk(2)`).
pub(crate) fn gate_up_projections(
    w: &dyn WeightSource,
    prefix: &str,
    d: usize,
    ff: usize,
    bias: bool,
    fused: bool,
) -> Result<LinearSet> {
    let parts = if fused {
        vec![linear(
            w,
            &format!("{prefix}.gate_up_proj"),
            2 * ff,
            d,
            bias,
        )?]
    } else {
        vec![
            linear(w, &format!("{prefix}.gate_proj"), ff, d, bias)?,
            linear(w, &format!("{prefix}.up_proj"), ff, d, bias)?,
        ]
    };
    LinearSet::new(parts)
}

/// The RMSNorms over each head of q and of k before the rotation (Qwen3, Gemma 3).
pub(crate) struct QkNorm {
    /// The factors each head is multiplied by, `[head_dim]` each.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub eps: f32,
}

pub(crate) struct SelfAttention {
    /// See [`qkv_projections`].
    pub qkv: LinearSet,
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
    /// See [`gate_up_projections`].
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
