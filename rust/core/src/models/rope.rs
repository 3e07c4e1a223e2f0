//! Rotary position embeddings as transformers applies them (`rotate_half` convention): dimension
//! `i < d/2` of a head is rotated together with dimension `i + d/2` by the angle
//! `position · inv_freq[i]`, computed in f32 like transformers' `LlamaRotaryEmbedding`.

use crate::error::Result;
use crate::format_err;

pub struct Rope {
    head_dim: usize,
    inv_freq: Vec<f32>,
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
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Result<Self> {
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(format_err!(
                "rotary embeddings need an even head dimension, got {head_dim}"
            ));
        }
        // transformers: 1 / base ** (arange(0, d, 2).float() / d), all in f32.
        let base = theta as f32;
        let mut inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        match *scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
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
                    let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                    *f = if medium {
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        Ok(Rope { head_dim, inv_freq })
    }

    /// Rotates every head of `x` (`[tokens, heads * head_dim]`) in place; token `t` sits at `positions[t]`.
    pub fn apply(&self, x: &mut [f32], heads: usize, positions: &[u32]) {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        let mut cos = vec![0.0f32; half];
        let mut sin = vec![0.0f32; half];
        for (t, &pos) in positions.iter().enumerate() {
            for i in 0..half {
                let angle = self.inv_freq[i] * pos as f32;
                cos[i] = (angle as f64).cos() as f32;
                sin[i] = (angle as f64).sin() as f32;
            }
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
}
