//! Rotary position embeddings as transformers applies them (`rotate_half` convention): dimension
//! `i < d/2` of a head is rotated together with dimension `i + d/2` by the angle
//! `position · inv_freq[i]`, computed in f32 like transformers' `LlamaRotaryEmbedding`.
//!
//! Partial rotary (Phi-3's `partial_rotary_factor`): only the first `rotary_dim` dimensions of a
//! head rotate (pairing `i` with `i + rotary_dim/2`); the rest pass through. LongRoPE (Phi-3.5 /
//! Phi-4-mini): two sets of frequencies, the long one used for a whole forward pass once its
//! largest position reaches `original_max_position_embeddings`, and cos/sin scaled by an
//! attention factor — as transformers' `dynamic_rope_update` does.

use crate::error::Result;
use crate::format_err;

pub struct Rope {
    head_dim: usize,
    /// The leading dimensions of each head that rotate (even, at most `head_dim`).
    rotary_dim: usize,
    inv_freq: Vec<f32>,
    /// LongRoPE: the frequencies for passes reaching past `original` positions, and the factor
    /// multiplying every cosine and sine.
    long: Option<LongFrequencies>,
    attention_factor: f32,
}

struct LongFrequencies {
    inv_freq: Vec<f32>,
    original: usize,
}

/// `rope_scaling` / `rope_parameters` variants that change the frequencies.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (frequencies likewise).
    Linear {
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: f32,
    },
    /// LongRoPE: frequencies divided by `short_factor[i]`, or by `long_factor[i]` for forward passes
    /// whose largest position + 1 exceeds `original_max_position`; cos and sin times
    /// `attention_factor`.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position: usize,
        attention_factor: f32,
    },
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Result<Self> {
        Self::partial(head_dim, head_dim, theta, scaling)
    }

    /// Rotates only the first `rotary_dim` dimensions of each head.
    pub fn partial(
        head_dim: usize,
        rotary_dim: usize,
        theta: f64,
        scaling: &RopeScaling,
    ) -> Result<Self> {
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
            return Err(format_err!(
                "rotary embeddings need an even rotary dimension of at most head_dim ({head_dim}), got {rotary_dim}"
            ));
        }
        // transformers: 1 / base ** (arange(0, d, 2).float() / d), all in f32.
        let base = theta as f32;
        let powers: Vec<f32> = (0..rotary_dim / 2)
            .map(|i| base.powf((2 * i) as f32 / rotary_dim as f32))
            .collect();
        let mut inv_freq: Vec<f32> = powers.iter().map(|p| 1.0 / p).collect();
        let (mut long, mut attention_factor) = (None, 1.0);
        match scaling {
            RopeScaling::None => {}
            &RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position,
                attention_factor: af,
            } => {
                let half = rotary_dim / 2;
                if short_factor.len() != half || long_factor.len() != half {
                    return Err(format_err!(
                        "config.json: rope_scaling.short_factor and long_factor must have rotary_dim / 2 = {half} entries, got {} and {}",
                        short_factor.len(),
                        long_factor.len()
                    ));
                }
                // transformers: 1 / (ext_factors * base ** (arange(0, d, 2) / d)), in f32.
                let scaled = |ext: &[f32]| -> Vec<f32> {
                    ext.iter()
                        .zip(&powers)
                        .map(|(e, p)| 1.0 / (e * p))
                        .collect()
                };
                inv_freq = scaled(short_factor);
                long = Some(LongFrequencies {
                    inv_freq: scaled(long_factor),
                    original: *original_max_position,
                });
                attention_factor = *af;
            }
            &RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let low_wavelen = original_max_position / low_freq_factor;
                let high_wavelen = original_max_position / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    let smooth = (original_max_position / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    // Negated comparisons, as transformers writes them (`~(a < b) & ~(a > c)`).
                    #[allow(clippy::neg_cmp_op_on_partial_ord)]
                    let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                    *f = if medium {
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        Ok(Rope {
            head_dim,
            rotary_dim,
            inv_freq,
            long,
            attention_factor,
        })
    }

    /// Rotates every head of `x` (`[tokens, heads * head_dim]`) in place; token `t` sits at `positions[t]`.
    pub fn apply(&self, x: &mut [f32], heads: usize, positions: &[u32]) {
        let mut angles = RopeAngles::default();
        self.angles_into(positions, &mut angles);
        self.apply_angles(x, heads, &angles);
    }

    /// The cosines and sines of a step's positions, computed once and shared by the queries and
    /// keys of every layer (the trigonometry would otherwise be redone 2 x layers times).
    ///
    /// LongRoPE picks its frequency set for the whole step, as transformers does per forward
    /// pass: the long one when the step's largest position + 1 exceeds the original context (so
    /// the rows of a batch, and the keys cached by earlier steps, share the choice).
    pub fn angles_into(&self, positions: &[u32], out: &mut RopeAngles) {
        let inv_freq = match &self.long {
            Some(long) if positions.iter().any(|&p| p as usize >= long.original) => &long.inv_freq,
            _ => &self.inv_freq,
        };
        let scale = self.attention_factor;
        out.cos.clear();
        out.sin.clear();
        for &pos in positions {
            for &f in inv_freq {
                let angle = f * pos as f32;
                out.cos.push((angle as f64).cos() as f32 * scale);
                out.sin.push((angle as f64).sin() as f32 * scale);
            }
        }
    }

    /// [`apply`](Self::apply) with angles from [`angles_into`](Self::angles_into).
    pub fn apply_angles(&self, x: &mut [f32], heads: usize, angles: &RopeAngles) {
        let (d, half) = (self.head_dim, self.rotary_dim / 2);
        for (t, (cos, sin)) in angles
            .cos
            .chunks_exact(half.max(1))
            .zip(angles.sin.chunks_exact(half.max(1)))
            .enumerate()
        {
            for h in 0..heads {
                let v = &mut x[(t * heads + h) * d..][..d];
                for i in 0..half {
                    let (a, b) = (v[i], v[i + half]);
                    v[i] = a * cos[i] - b * sin[i];
                    v[i + half] = b * cos[i] + a * sin[i];
                }
            }
        }
    }
}

/// Per-position rotation angles of one step: `[tokens, rotary_dim / 2]` cosines and sines.
#[derive(Default)]
pub struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_rotation_preserves_norm() {
        let rope = Rope::new(8, 10000.0, &RopeScaling::None).unwrap();
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 - 1.0).collect();
        let mut x = orig.clone();
        rope.apply(&mut x, 2, &[0]);
        assert_eq!(x, orig);
        rope.apply(&mut x, 2, &[17]);
        for h in 0..2 {
            let n0: f32 = orig[h * 8..h * 8 + 8].iter().map(|v| v * v).sum();
            let n1: f32 = x[h * 8..h * 8 + 8].iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
        }
    }

    #[test]
    fn rotate_half_pairs_dimension_i_with_i_plus_half() {
        // Only dimension 0 and its partner 2 are non-zero: the rotation must mix exactly them.
        let rope = Rope::new(4, 1.0, &RopeScaling::None).unwrap(); // inv_freq = [1, 1]
        let mut x = vec![1.0, 0.0, 0.0, 0.0];
        rope.apply(&mut x, 1, &[1]);
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((x[0] - c).abs() < 1e-6 && (x[2] - s).abs() < 1e-6 && x[1] == 0.0 && x[3] == 0.0);
    }

    #[test]
    fn partial_rotary_leaves_the_tail_of_each_head_alone() {
        // head_dim 6, rotary_dim 4: dims 0..4 rotate (0 with 2, 1 with 3), 4 and 5 pass through.
        let rope = Rope::partial(6, 4, 1.0, &RopeScaling::None).unwrap(); // inv_freq = [1, 1]
        let mut x = vec![1.0, 0.0, 0.0, 0.0, 7.0, -3.0];
        rope.apply(&mut x, 1, &[1]);
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((x[0] - c).abs() < 1e-6 && (x[2] - s).abs() < 1e-6);
        assert_eq!((x[1], x[3], x[4], x[5]), (0.0, 0.0, 7.0, -3.0));
        assert!(Rope::partial(6, 3, 1.0, &RopeScaling::None).is_err());
        assert!(Rope::partial(6, 8, 1.0, &RopeScaling::None).is_err());
    }

    #[test]
    fn longrope_switches_to_the_long_factors_for_a_whole_step_past_the_original_context() {
        // rotary_dim 2: one frequency, 1 / factor (base ** 0 = 1); cos/sin scaled by 0.5.
        let scaling = RopeScaling::LongRope {
            short_factor: vec![2.0],
            long_factor: vec![4.0],
            original_max_position: 8,
            attention_factor: 0.5,
        };
        let rope = Rope::partial(2, 2, 10000.0, &scaling).unwrap();
        let angle_of = |positions: &[u32], at: usize| {
            let mut a = RopeAngles::default();
            rope.angles_into(positions, &mut a);
            (a.cos[at], a.sin[at])
        };
        let expect = |angle: f32| (0.5 * angle.cos(), 0.5 * angle.sin());
        // Largest position 7: seq_len 8 is not past the original context -> short factor.
        let (c, s) = angle_of(&[3, 7], 0);
        let (wc, ws) = expect(3.0 / 2.0);
        assert!((c - wc).abs() < 1e-6 && (s - ws).abs() < 1e-6);
        // Position 8 in the same step: every position of the step takes the long factor.
        let (c, s) = angle_of(&[3, 8], 0);
        let (wc, ws) = expect(3.0 / 4.0);
        assert!((c - wc).abs() < 1e-6 && (s - ws).abs() < 1e-6);
        let wrong_length = RopeScaling::LongRope {
            short_factor: vec![1.0, 1.0],
            long_factor: vec![1.0],
            original_max_position: 8,
            attention_factor: 1.0,
        };
        let err = Rope::partial(2, 2, 1.0, &wrong_length)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("short_factor"), "{err}");
    }
}
