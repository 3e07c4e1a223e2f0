//! GPT-2 (`transformers/models/gpt2/modeling_gpt2.py`): learned absolute positions added to the
//! token embedding, pre-norm blocks with LayerNorm (with bias), fused `c_attn` q/k/v projection,
//! attention scaled by `1/sqrt(head_dim)` (optionally also by `1/(layer+1)`), a GELU MLP, a final
//! LayerNorm and the head tied to the token embedding. `Conv1D` weights are stored `[in, out]`, so
//! they are transposed once at load into the `[out, in]` layout of every other projection.

use std::sync::Arc;

use super::attention::Attention;
use super::checkpoint::tensor;
use super::config_checks::{
    epsilon, get_bool, get_f64, get_str, get_usize, parse_object, positive,
};
use super::decoder::{DecoderModel, DecoderStack};
use super::kv_cache::KvCache;
use super::registry::ModelConfig;
use super::session::StepBuffers;
use super::{add, projection, Model, StepInput};
use crate::error::{Error, Result};
use crate::format_err;
use crate::formats::WeightSource;
use crate::kernels::{activation, norm::layer_norm};
use crate::tensor::{Linear, LinearSet, Tensor};
use crate::threading::build_pool;

#[derive(Clone, Debug)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: Option<usize>,
    pub activation_function: String,
    pub layer_norm_epsilon: f64,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
}

mod defaults {
    pub fn vocab_size() -> usize {
        50257
    }
    pub fn n_positions() -> usize {
        1024
    }
    pub fn n_embd() -> usize {
        768
    }
    pub fn n_layer() -> usize {
        12
    }
    pub fn n_head() -> usize {
        12
    }
    pub fn activation_function() -> String {
        "gelu_new".into()
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-5
    }
    pub fn yes() -> bool {
        true
    }
}

#[derive(Clone, Copy, Debug)]
enum Act {
    GeluTanh,
    GeluErf,
    Relu,
    Silu,
}

impl Gpt2Config {
    pub fn from_json(json: &str) -> Result<Self> {
        let v = parse_object(json)?;
        let size = |key: &str, default: usize| -> Result<usize> {
            positive(key, get_usize(&v, key)?.unwrap_or(default))
        };
        let cfg = Gpt2Config {
            vocab_size: size("vocab_size", defaults::vocab_size())?,
            n_positions: size("n_positions", defaults::n_positions())?,
            n_embd: size("n_embd", defaults::n_embd())?,
            n_layer: size("n_layer", defaults::n_layer())?,
            n_head: size("n_head", defaults::n_head())?,
            n_inner: get_usize(&v, "n_inner")?
                .map(|n| positive("n_inner", n))
                .transpose()?,
            activation_function: get_str(&v, "activation_function")?
                .map_or_else(defaults::activation_function, str::to_string),
            layer_norm_epsilon: epsilon(
                "layer_norm_epsilon",
                get_f64(&v, "layer_norm_epsilon")?.unwrap_or(defaults::layer_norm_epsilon()),
            )?,
            scale_attn_weights: get_bool(&v, "scale_attn_weights")?.unwrap_or(defaults::yes()),
            scale_attn_by_inverse_layer_idx: get_bool(&v, "scale_attn_by_inverse_layer_idx")?
                .unwrap_or(false),
        };
        if !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(format_err!(
                "config.json: n_embd ({}) must be a multiple of n_head ({})",
                cfg.n_embd,
                cfg.n_head
            ));
        }
        // `c_attn`'s width (3 x n_embd) and the default feed-forward width (4 x n_embd); the model
        // multiplies these unchecked from here on.
        if cfg.n_embd.checked_mul(4).is_none() {
            return Err(format_err!(
                "config.json: n_embd ({}) overflows 4 x n_embd: not the size of a real model",
                cfg.n_embd
            ));
        }
        cfg.act()?;
        Ok(cfg)
    }

    fn act(&self) -> Result<Act> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Act::GeluTanh),
            "gelu" => Ok(Act::GeluErf),
            "relu" => Ok(Act::Relu),
            "silu" | "swish" => Ok(Act::Silu),
            other => Err(format_err!(
                "config.json: activation_function '{other}' is not supported"
            )),
        }
    }

    fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

impl ModelConfig for Gpt2Config {
    fn attention_heads(&self) -> (usize, usize) {
        (self.n_head, self.n_head)
    }

    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>> {
        let weights = Gpt2Weights::load(self.clone(), weights, threads)?;
        Ok(Arc::new(DecoderModel::new(weights)))
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

struct Block {
    ln_1: Norm,
    /// `c_attn`: its q, k and v thirds, stacked as `[q | k | v]` (one product).
    qkv: LinearSet,
    attn_proj: Linear,
    ln_2: Norm,
    fc: Linear,
    mlp_proj: Linear,
}

struct Gpt2Weights {
    cfg: Gpt2Config,
    act: Act,
    eps: f32,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    lm_head: Linear,
    pool: rayon::ThreadPool,
}

/// Reads a `Conv1D` (`weight [in, out]`, `bias [out]`) as `[out, in]` projections, split along the
/// output into `parts` equal pieces (3 for `c_attn`).
fn conv1d(
    w: &dyn WeightSource,
    prefix: &str,
    inp: usize,
    out: usize,
    parts: usize,
) -> Result<Vec<Linear>> {
    let weight = tensor(w, &format!("{prefix}.weight"), &[inp, out])?;
    let bias = tensor(w, &format!("{prefix}.bias"), &[out])?;
    let (wd, bd) = (weight.data(), bias.data());
    let part = out / parts;
    let linears = (0..parts)
        .map(|p| {
            let mut t = vec![0.0f32; part * inp];
            for o in 0..part {
                for i in 0..inp {
                    t[o * inp + i] = wd[i * out + p * part + o];
                }
            }
            let linear = Linear::new(
                Tensor::from_vec(vec![part, inp], t)?,
                Some(bd[p * part..(p + 1) * part].to_vec()),
            )?;
            projection(w, linear)
        })
        .collect::<Result<Vec<_>>>()?;
    // The transposed copies replace the stored layout, which is not read again.
    weight.release_mapped_pages();
    Ok(linears)
}

impl Gpt2Weights {
    fn load(cfg: Gpt2Config, w: &dyn WeightSource, threads: usize) -> Result<Self> {
        // Checkpoints saved from GPT2LMHeadModel prefix names with "transformer."; the original ones do not.
        let p = if w.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let (d, inner) = (cfg.n_embd, cfg.inner());
        let t = |name: &str, shape: &[usize]| tensor(w, &format!("{p}{name}"), shape);
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                weight: t(&format!("{name}.weight"), &[d])?,
                bias: t(&format!("{name}.bias"), &[d])?,
            })
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let b = format!("{p}h.{i}");
                Ok(Block {
                    ln_1: norm(&format!("h.{i}.ln_1"))?,
                    qkv: LinearSet::new(conv1d(w, &format!("{b}.attn.c_attn"), d, 3 * d, 3)?)?,
                    attn_proj: conv1d(w, &format!("{b}.attn.c_proj"), d, d, 1)?.remove(0),
                    ln_2: norm(&format!("h.{i}.ln_2"))?,
                    fc: conv1d(w, &format!("{b}.mlp.c_fc"), d, inner, 1)?.remove(0),
                    mlp_proj: conv1d(w, &format!("{b}.mlp.c_proj"), inner, d, 1)?.remove(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt2Weights {
            act: cfg.act()?,
            eps: cfg.layer_norm_epsilon as f32,
            wte: t("wte.weight", &[cfg.vocab_size, d])?,
            wpe: t("wpe.weight", &[cfg.n_positions, d])?,
            ln_f: norm("ln_f")?,
            // GPT2LMHeadModel ties its head to `wte` (transformers does not store it then); a
            // checkpoint saved with `tie_word_embeddings: false` stores its own `lm_head.weight`.
            lm_head: projection(
                w,
                Linear::new(
                    if w.contains("lm_head.weight") {
                        tensor(w, "lm_head.weight", &[cfg.vocab_size, d])?
                    } else {
                        t("wte.weight", &[cfg.vocab_size, d])?
                    },
                    None,
                )?,
            )?,
            blocks,
            pool: build_pool(threads)?,
            cfg,
        })
    }
}

impl Gpt2Weights {
    fn norm(&self, x: &[f32], n: &Norm, out: &mut [f32]) {
        layer_norm(x, n.weight.data(), n.bias.data(), self.eps, out);
    }

    fn activate(&self, x: &mut [f32]) {
        match self.act {
            Act::GeluTanh => activation::gelu_tanh(x),
            Act::GeluErf => activation::gelu_erf(x),
            Act::Relu => activation::relu(x),
            Act::Silu => activation::silu(x),
        }
    }
}

impl DecoderStack for Gpt2Weights {
    /// The feed-forward's hidden layer.
    type Scratch = Vec<f32>;

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    fn max_positions(&self) -> usize {
        self.cfg.n_positions
    }

    fn max_positions_is_hard(&self) -> bool {
        true
    }

    fn decode_weight_bytes(&self) -> usize {
        let layers: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.qkv.weight_bytes()
                    + [&b.attn_proj, &b.fc, &b.mlp_proj]
                        .iter()
                        .map(|l| l.weight_bytes())
                        .sum::<usize>()
            })
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    fn cache_shape(&self) -> (usize, usize, usize) {
        let cfg = &self.cfg;
        (cfg.n_layer, cfg.n_head, cfg.n_embd / cfg.n_head)
    }

    fn check_positions(&self, positions: &[u32]) -> Result<()> {
        match positions
            .iter()
            .find(|&&p| p as usize >= self.cfg.n_positions)
        {
            Some(p) => Err(Error::InvalidInput(format!(
                "position {p} is beyond the {} positions this GPT-2 model has (input plus new tokens too long)",
                self.cfg.n_positions
            ))),
            None => Ok(()),
        }
    }

    fn forward(
        &self,
        input: &StepInput,
        positions: &[u32],
        last_only: bool,
        cache: &mut KvCache,
        b: &mut StepBuffers,
        ff: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        let (w, cfg) = (self, &self.cfg);
        let (rows, n, d) = (cache.rows(), input.n, cfg.n_embd);
        let (heads, hd) = (cfg.n_head, cfg.n_embd / cfg.n_head);
        let m = rows * n;
        let mut h = std::mem::take(&mut b.h);
        h.clear();
        for (&t, &pos) in input.tokens.iter().zip(positions) {
            h.extend(
                w.wte
                    .row(t as usize)
                    .iter()
                    .zip(w.wpe.row(pos as usize))
                    .map(|(a, b)| a + b),
            );
        }
        cache.begin_step(n, input.mask);
        b.x.resize(m * d, 0.0);
        b.ctx.resize(m * d, 0.0);
        for (li, block) in w.blocks.iter().enumerate() {
            let mut scale = if cfg.scale_attn_weights {
                1.0 / (hd as f32).sqrt()
            } else {
                1.0
            };
            if cfg.scale_attn_by_inverse_layer_idx {
                scale /= (li + 1) as f32;
            }
            let attn = Attention {
                heads,
                kv_heads: heads,
                head_dim: hd,
                scale,
                causal: true,
                q_offset: cache.len(),
                window: None,
                softcap: None,
                bias: None,
                interrupt: input.interrupt,
            };
            // Checked before each sublayer: a long prefill spends a fraction of a second in each.
            input.check_interrupt()?;
            w.norm(&h, &block.ln_1, &mut b.x);
            b.project_qkv(&block.qkv, m, input.interrupt)?;
            cache.write(li, &b.k, &b.v);
            attn.run(&b.q, rows, n, &cache.view(li), &mut b.ctx);
            block
                .attn_proj
                .forward_checked(&b.ctx, m, &mut b.proj, input.interrupt)?;
            add(&mut h, &b.proj);
            input.check_interrupt()?;
            w.norm(&h, &block.ln_2, &mut b.x);
            block.fc.forward_checked(&b.x, m, ff, input.interrupt)?;
            w.activate(ff);
            block
                .mlp_proj
                .forward_checked(ff, m, &mut b.proj, input.interrupt)?;
            add(&mut h, &b.proj);
        }
        cache.commit();
        let count = b.logit_rows(&h, rows, n, d, last_only);
        w.norm(&b.last, &w.ln_f, &mut b.x);
        b.h = h;
        let mut logits = Vec::new();
        w.lm_head
            .forward_checked(&b.x, count, &mut logits, input.interrupt)?;
        Ok(logits)
    }
}
