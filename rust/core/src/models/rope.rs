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
        let mut angles = RopeAngles::default();
        self.angles_into(positions, &mut angles);
        self.apply_angles(x, heads, &angles);
    }

    /// The cosines and sines of a step's positions, computed once and shared by the queries and
    /// keys of every layer (the trigonometry would otherwise be redone 2 x layers times).
    pub fn angles_into(&self, positions: &[u32], out: &mut RopeAngles) {
        let half = self.head_dim / 2;
        out.cos.clear();
        out.sin.clear();
        for &pos in positions {
            for &f in &self.inv_freq[..half] {
                let angle = f * pos as f32;
                out.cos.push((angle as f64).cos() as f32);
                out.sin.push((angle as f64).sin() as f32);
            }
        }
    }

    /// [`apply`](Self::apply) with angles from [`angles_into`](Self::angles_into).
    pub fn apply_angles(&self, x: &mut [f32], heads: usize, angles: &RopeAngles) {
        let (d, half) = (self.head_dim, self.head_dim / 2);
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

/// Per-position rotation angles of one step: `[tokens, head_dim / 2]` cosines and sines.
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
}
