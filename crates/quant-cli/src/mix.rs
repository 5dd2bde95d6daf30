//! llama.cpp's k-quant file types that mix formats per tensor (`Q4_K_M` and friends): which
//! format each tensor gets, by llama-quantize's rules (`llama_tensor_get_type` in llama.cpp's
//! `src/llama-quant.cpp`, as of the llama.cpp that llama-cpp-python 0.3.36 vendors; the rules
//! change between llama.cpp versions), for a GGUF file with llama.cpp's tensor names and
//! metadata.
//!
//! Followed, as llama.cpp does them without an importance matrix or overrides:
//! * which tensors are quantized: two or more dimensions (not counting trailing 1s), a name
//!   ending in `weight`, not a norm (`_norm.weight`), not an MoE router (`ffn_gate_inp`), not
//!   BERT's `position_embd`/`token_types`, nor the small special tensors llama.cpp names (Mamba's
//!   `ssm_conv1d`, RWKV's `time_mix_*`, T5's `attn_rel_b`, multimodal position and patch
//!   tensors, GLM-5-Next's indexer and compressor tensors, ...); the others are copied;
//! * `output.weight` (and `token_embd.weight` when there is no `output.weight`, the embeddings
//!   being tied) get `Q6_K` (`Q8_0` for Falcon or when its rows are not whole super-blocks);
//! * `attn_v` (and fused `attn_qkv`, `attn_kv_b`), counted in llama.cpp's tensor order (by
//!   layer, then name): `Q6_K` on the layers of `use_more_bits` (the first and last eighth and
//!   every third between) for `Q4_K_M`/`Q5_K_M`; `Q5_K` on the first 4 for `Q4_K_S`, the first 2
//!   for `Q3_K_M` (`Q4_K` after), all for `Q3_K_L`; `Q8_0` in 8-expert models;
//! * `ffn_down` by layer: `Q6_K` on `use_more_bits` layers for `Q4_K_M`/`Q5_K_M`; `Q5_K` on the
//!   first eighth for `Q4_K_S`; for `Q3_K_M`, `Q5_K` on the first sixteenth and `Q4_K` after; `Q5_K`
//!   for `Q3_K_L`; Falcon's own variants of these;
//! * `attn_output`: `Q4_K` for `Q3_K_M`, `Q5_K` for `Q3_K_L` (`Q4_K` on Falcon); `Q5_K` for
//!   `Q3_K_S`/`Q3_K_M`/`Q4_K_S`/`Q4_K_M` in 8-expert models; `attn_k`: `Q8_0` in 8-expert models;
//! * in llama's 70B (80 layers, fewer key/value heads than heads), `attn_v` tensors that the
//!   rules above leave in `Q3_K` or `Q4_K` get `Q5_K`;
//! * a tensor whose rows are not whole blocks of its format falls back as llama.cpp's
//!   `tensor_type_fallback`: `Q2_K` and `Q3_K` to `IQ4_NL`, `Q4_K` to `Q5_0`, `Q5_K` to `Q5_1`, `Q6_K` to
//!   `Q8_0`, and to `F16` when even that (or a format of 32-value blocks) does not fit;
//! * `general.file_type` is set to the mix's `llama_ftype` (11 to 17).
//!
//! Not followed: importance matrices, `--pure`, `--tensor-type` overrides and the `IQ`/`Q2_K`
//! mixes (they read the attention's grouping and need an importance matrix).

use quant_core::BlockFormat;

/// A llama.cpp k-quant file type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mix {
    /// `Q3_K_S`: `Q3_K` everywhere but the output.
    Q3KS,
    /// `Q3_K_M`.
    Q3KM,
    /// `Q3_K_L`.
    Q3KL,
    /// `Q4_K_S`.
    Q4KS,
    /// `Q4_K_M`, llama.cpp's usual recommendation.
    Q4KM,
    /// `Q5_K_S`: `Q5_K` everywhere but the output.
    Q5KS,
    /// `Q5_K_M`.
    Q5KM,
}

/// Every mix, as `--type` names them.
pub const ALL: [(&str, Mix); 7] = [
    ("q3_k_s", Mix::Q3KS),
    ("q3_k_m", Mix::Q3KM),
    ("q3_k_l", Mix::Q3KL),
    ("q4_k_s", Mix::Q4KS),
    ("q4_k_m", Mix::Q4KM),
    ("q5_k_s", Mix::Q5KS),
    ("q5_k_m", Mix::Q5KM),
];

/// What a tensor becomes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Copied as it is.
    Keep,
    /// Quantized to a block format.
    Blocks(BlockFormat),
    /// Converted to `F16` (a fallback for rows that fit no block).
    F16,
}

/// The model facts the rules read from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`: the number of layers.
    pub n_layer: usize,
    /// `{arch}.expert_count` (0 without experts).
    pub n_expert: usize,
    /// Whether llama.cpp counts the model as llama's 70B (`LLM_TYPE_70B`: a llama of 80 layers
    /// whose `head_count_kv` differs from `head_count`).
    pub is_70b: bool,
}

/// One tensor as the rules see it.
pub struct TensorRef<'a> {
    /// Its name.
    pub name: &'a str,
    /// GGUF dimensions, innermost (the row length) first.
    pub dims: &'a [u64],
    /// Whether its values are floating point that quant can quantize (F32, F16, BF16).
    pub float: bool,
}

/// llama.cpp's tensor categories (`tensor_get_category`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    match name {
        "output.weight" => return Category::Output,
        "token_embd.weight" | "per_layer_token_embd.weight" => return Category::TokenEmbd,
        _ => {}
    }
    for (needle, c) in [
        ("attn_qkv.weight", Category::AttnQkv),
        ("attn_kv_b.weight", Category::AttnKvB),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ] {
        if name.contains(needle) {
            return c;
        }
    }
    Category::Other
}

/// Whether llama.cpp quantizes a tensor of this name and these dimensions in a model of
/// architecture `arch` (`tensor_allows_quantization`, with the output tensor quantized as by
/// default).
fn allows_quantization(name: &str, dims: &[u64], arch: &str) -> bool {
    // ggml_n_dims: trailing dimensions of 1 do not count.
    let n_dims = dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const NEVER: [&str; 31] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
    ];
    const NEVER_MORE: [&str; 4] = [".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"];
    if NEVER.iter().chain(&NEVER_MORE).any(|n| name.contains(n)) {
        return false;
    }
    const GLM5_NEXT: [&str; 14] = [
        "hc_",
        "indexer.attn_q_b",
        "indexer.attn_k",
        "indexer.proj",
        "indexer_compressor_gate",
        "indexer_compressor_ape",
        "ssm_f_a.weight",
        "ssm_f_b.weight",
        "ssm_g_a.weight",
        "ssm_g_b.weight",
        "ssm_beta.weight",
        "attn_kv_a_mqa.weight",
        "attn_k_b.weight",
        "attn_v_b.weight",
    ];
    if arch == "glm5-next" && GLM5_NEXT.iter().any(|n| name.contains(n)) {
        return false;
    }
    name != "position_embd.weight" && name != "token_types.weight"
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third one
/// between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The layer of `blk.N.` names (`-1` for the others), as llama.cpp's `sscanf(name, "blk.%d.")`.
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .map(|rest| rest.bytes().take_while(u8::is_ascii_digit).fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
        .filter(|_| name.as_bytes().get(4).is_some_and(u8::is_ascii_digit))
        .unwrap_or(-1)
}

impl Mix {
    /// The mix `--type NAME` names (case ignored).
    pub fn by_name(name: &str) -> Option<Mix> {
        ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, m)| m)
    }

    /// llama.cpp's name (`"Q4_K_M"`).
    pub fn name(self) -> String {
        ALL.iter().find(|&&(_, m)| m == self).map_or(String::new(), |(n, _)| n.to_ascii_uppercase())
    }

    /// llama.cpp's `llama_ftype` value, written as `general.file_type`.
    pub fn ftype(self) -> u32 {
        match self {
            Mix::Q3KS => 11,
            Mix::Q3KM => 12,
            Mix::Q3KL => 13,
            Mix::Q4KS => 14,
            Mix::Q4KM => 15,
            Mix::Q5KS => 16,
            Mix::Q5KM => 17,
        }
    }

    /// The format of the tensors no rule singles out.
    pub fn default_format(self) -> BlockFormat {
        match self {
            Mix::Q3KS | Mix::Q3KM | Mix::Q3KL => BlockFormat::Q3_K,
            Mix::Q4KS | Mix::Q4KM => BlockFormat::Q4_K,
            Mix::Q5KS | Mix::Q5KM => BlockFormat::Q5_K,
        }
    }

    /// What each tensor becomes (in `tensors`' order), or an error naming what llama.cpp would
    /// refuse (an expert tensor whose name gives no layer).
    pub fn plan(self, info: &ModelInfo, tensors: &[TensorRef]) -> Result<Vec<Target>, String> {
        let falcon = info.arch == "falcon";
        let tied = !tensors.iter().any(|t| t.name == "output.weight");
        let is_attn_v = |c: Category| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB);
        let n_attention_wv = tensors.iter().filter(|t| is_attn_v(category(t.name))).count();
        let (mut i_attention_wv, mut i_ffn_down) = (0usize, 0usize);
        // llama.cpp visits the tensors by layer, then name (its weight_name_comparer); the
        // counters above advance in that order.
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by(|&a, &b| {
            (layer_of(tensors[a].name), tensors[a].name).cmp(&(layer_of(tensors[b].name), tensors[b].name))
        });
        let mut out = vec![Target::Keep; tensors.len()];
        let default = self.default_format();
        for i in order {
            let t = &tensors[i];
            if !t.float || !allows_quantization(t.name, t.dims, &info.arch) {
                continue;
            }
            let cat = category(t.name);
            let mut ty = default;
            if cat == Category::Output || (tied && cat == Category::TokenEmbd) {
                let nx = t.dims[0];
                ty = if falcon || !nx.is_multiple_of(default.block_len() as u64) {
                    BlockFormat::Q8_0
                } else {
                    BlockFormat::Q6_K
                };
            } else if cat == Category::TokenEmbd {
                // The default format.
            } else if is_attn_v(cat) {
                match self {
                    Mix::Q3KM => ty = if i_attention_wv < 2 { BlockFormat::Q5_K } else { BlockFormat::Q4_K },
                    Mix::Q3KL => ty = BlockFormat::Q5_K,
                    Mix::Q4KM | Mix::Q5KM if use_more_bits(i_attention_wv, n_attention_wv) => ty = BlockFormat::Q6_K,
                    Mix::Q4KS if i_attention_wv < 4 => ty = BlockFormat::Q5_K,
                    _ => {}
                }
                if info.is_70b && matches!(ty, BlockFormat::Q3_K | BlockFormat::Q4_K) {
                    ty = BlockFormat::Q5_K;
                }
                if info.n_expert == 8 {
                    ty = BlockFormat::Q8_0;
                }
                i_attention_wv += 1;
            } else if cat == Category::AttnK {
                if info.n_expert == 8 {
                    ty = BlockFormat::Q8_0;
                }
            } else if cat == Category::FfnDown {
                let n_layer = info.n_layer;
                let i_layer = if info.n_expert > 1 {
                    // Experts are not in layer order: llama.cpp reads the layer from the name.
                    let l = layer_of(t.name);
                    if l < 0 || l as usize >= n_layer {
                        return Err(format!("tensor {:?}: no layer in 0..{n_layer} in its name", t.name));
                    }
                    l as usize
                } else {
                    i_ffn_down
                };
                let more = use_more_bits(i_layer, n_layer);
                match self {
                    Mix::Q3KM => {
                        ty = if i_layer < n_layer / 16 {
                            BlockFormat::Q5_K
                        } else if !falcon || more {
                            BlockFormat::Q4_K
                        } else {
                            BlockFormat::Q3_K
                        };
                    }
                    Mix::Q3KL => ty = if falcon { BlockFormat::Q4_K } else { BlockFormat::Q5_K },
                    Mix::Q4KM if falcon => {
                        ty = if i_layer < n_layer / 16 {
                            BlockFormat::Q6_K
                        } else if more {
                            BlockFormat::Q5_K
                        } else {
                            BlockFormat::Q4_K
                        };
                    }
                    Mix::Q4KM | Mix::Q5KM if more => ty = BlockFormat::Q6_K,
                    Mix::Q4KS if !falcon && i_layer < n_layer / 8 => ty = BlockFormat::Q5_K,
                    _ => {}
                }
                i_ffn_down += 1;
            } else if cat == Category::AttnOutput {
                if !falcon {
                    if info.n_expert == 8 {
                        if matches!(self, Mix::Q3KS | Mix::Q3KM | Mix::Q4KS | Mix::Q4KM) {
                            ty = BlockFormat::Q5_K;
                        }
                    } else if self == Mix::Q3KM {
                        ty = BlockFormat::Q4_K;
                    } else if self == Mix::Q3KL {
                        ty = BlockFormat::Q5_K;
                    }
                } else if self == Mix::Q3KL {
                    ty = BlockFormat::Q4_K;
                }
            }
            out[i] = fallback(t.dims[0], ty);
        }
        Ok(out)
    }
}

/// llama.cpp's `tensor_type_fallback`: a format whose blocks do not divide the rows (of `nx`
/// values) becomes one whose blocks do, or `F16`.
pub fn fallback(nx: u64, ty: BlockFormat) -> Target {
    let fits = |f: BlockFormat| nx.is_multiple_of(f.block_len() as u64);
    if fits(ty) {
        return Target::Blocks(ty);
    }
    let next = match ty {
        BlockFormat::Q2_K | BlockFormat::Q3_K | BlockFormat::IQ4_XS => BlockFormat::IQ4_NL,
        BlockFormat::Q4_K => BlockFormat::Q5_0,
        BlockFormat::Q5_K => BlockFormat::Q5_1,
        BlockFormat::Q6_K => BlockFormat::Q8_0,
        // Already 32-value blocks: nothing smaller to go to.
        other => other,
    };
    if fits(next) {
        Target::Blocks(next)
    } else {
        Target::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A llama-style model of `n` layers: names and dimensions as convert_hf_to_gguf.py writes
    /// them, in file order (not llama.cpp's sorted order).
    fn llama(n: usize, hidden: u64, ffn: u64) -> Vec<(String, Vec<u64>)> {
        let mut t = vec![("token_embd.weight".to_string(), vec![hidden, 32000])];
        for l in 0..n {
            for (name, dims) in [
                ("attn_norm.weight", vec![hidden]),
                ("attn_q.weight", vec![hidden, hidden]),
                ("attn_k.weight", vec![hidden, hidden / 4]),
                ("attn_v.weight", vec![hidden, hidden / 4]),
                ("attn_output.weight", vec![hidden, hidden]),
                ("ffn_norm.weight", vec![hidden]),
                ("ffn_gate.weight", vec![hidden, ffn]),
                ("ffn_up.weight", vec![hidden, ffn]),
                ("ffn_down.weight", vec![ffn, hidden]),
            ] {
                t.push((format!("blk.{l}.{name}"), dims));
            }
        }
        t.push(("output_norm.weight".into(), vec![hidden]));
        t.push(("output.weight".into(), vec![hidden, 32000]));
        t
    }

    fn plan(mix: Mix, model: &[(String, Vec<u64>)], n_expert: usize, arch: &str) -> Vec<(String, Target)> {
        let refs: Vec<TensorRef> = model.iter().map(|(n, d)| TensorRef { name: n, dims: d, float: true }).collect();
        let n_layer = model.iter().filter(|(n, _)| n.ends_with("attn_q.weight")).count();
        let info = ModelInfo { arch: arch.into(), n_layer, n_expert, is_70b: false };
        let out = mix.plan(&info, &refs).expect("plans");
        model.iter().map(|(n, _)| n.clone()).zip(out).collect()
    }

    fn of(p: &[(String, Target)], name: &str) -> Target {
        p.iter().find(|(n, _)| n == name).map_or(Target::Keep, |(_, t)| *t)
    }

    use BlockFormat::{Q3_K, Q4_K, Q5_0, Q5_K, Q6_K, Q8_0};
    use Target::Blocks;

    /// llama.cpp's own description of Q4_K_M and Q5_K_M ("Q6_K for half of the attention.wv and
    /// feed_forward.w2 tensors, else Q4_K / Q5_K"), on a 32-layer llama: which half, the output,
    /// the embeddings, and the norms kept.
    #[test]
    fn q4_k_m_and_q5_k_m_give_half_of_attn_v_and_ffn_down_q6_k() {
        let model = llama(32, 4096, 11008);
        // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2: 16 of the 32 layers.
        let more = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];
        for (mix, base) in [(Mix::Q4KM, Q4_K), (Mix::Q5KM, Q5_K)] {
            let p = plan(mix, &model, 0, "llama");
            for l in 0..32 {
                let want = if more.contains(&l) { Q6_K } else { base };
                assert_eq!(of(&p, &format!("blk.{l}.attn_v.weight")), Blocks(want), "{mix:?} attn_v {l}");
                assert_eq!(of(&p, &format!("blk.{l}.ffn_down.weight")), Blocks(want), "{mix:?} ffn_down {l}");
                for other in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
                    assert_eq!(of(&p, &format!("blk.{l}.{other}.weight")), Blocks(base), "{mix:?} {other} {l}");
                }
                assert_eq!(of(&p, &format!("blk.{l}.attn_norm.weight")), Target::Keep);
            }
            assert_eq!(of(&p, "output.weight"), Blocks(Q6_K));
            assert_eq!(of(&p, "token_embd.weight"), Blocks(base));
            assert_eq!(of(&p, "output_norm.weight"), Target::Keep);
        }
    }

    /// The attn_v counter follows llama.cpp's sorted order (layer 10 after layer 9, not after
    /// layer 1 as strings sort), and the other mixes' documented bumps.
    #[test]
    fn the_other_mixes_and_the_tensor_order() {
        let model = llama(16, 2048, 5632);
        let p = plan(Mix::Q4KS, &model, 0, "llama");
        for l in 0..16 {
            let v = if l < 4 { Q5_K } else { Q4_K };
            assert_eq!(of(&p, &format!("blk.{l}.attn_v.weight")), Blocks(v), "Q4_K_S attn_v {l}");
            let d = if l < 2 { Q5_K } else { Q4_K };
            assert_eq!(of(&p, &format!("blk.{l}.ffn_down.weight")), Blocks(d), "Q4_K_S ffn_down {l}");
        }
        let p = plan(Mix::Q3KM, &model, 0, "llama");
        for l in 0..16 {
            assert_eq!(of(&p, &format!("blk.{l}.attn_v.weight")), Blocks(if l < 2 { Q5_K } else { Q4_K }), "{l}");
            assert_eq!(of(&p, &format!("blk.{l}.ffn_down.weight")), Blocks(if l < 1 { Q5_K } else { Q4_K }), "{l}");
            assert_eq!(of(&p, &format!("blk.{l}.attn_output.weight")), Blocks(Q4_K));
            assert_eq!(of(&p, &format!("blk.{l}.attn_q.weight")), Blocks(Q3_K));
        }
        let p = plan(Mix::Q3KL, &model, 0, "llama");
        assert_eq!(of(&p, "blk.15.attn_v.weight"), Blocks(Q5_K));
        assert_eq!(of(&p, "blk.7.attn_output.weight"), Blocks(Q5_K));
        let p = plan(Mix::Q3KS, &model, 0, "llama");
        assert_eq!(of(&p, "blk.0.attn_v.weight"), Blocks(Q3_K));
        assert_eq!(of(&p, "output.weight"), Blocks(Q6_K));
        // Eight experts: attn_v and attn_k to Q8_0, attn_output to Q5_K.
        let p = plan(Mix::Q4KM, &model, 8, "llama");
        assert_eq!(of(&p, "blk.3.attn_v.weight"), Blocks(Q8_0));
        assert_eq!(of(&p, "blk.3.attn_k.weight"), Blocks(Q8_0));
        assert_eq!(of(&p, "blk.3.attn_output.weight"), Blocks(Q5_K));
        // Falcon: output to Q8_0; ffn_down Q6_K on the first sixteenth, then Q5_K on the
        // use_more_bits layers (1, 4, 7, ...; 14, 15), Q4_K on the others.
        let p = plan(Mix::Q4KM, &model, 0, "falcon");
        assert_eq!(of(&p, "output.weight"), Blocks(Q8_0));
        let want = [Q6_K, Q5_K, Q4_K, Q4_K, Q5_K, Q4_K, Q4_K, Q5_K];
        for (l, w) in want.iter().enumerate() {
            assert_eq!(of(&p, &format!("blk.{l}.ffn_down.weight")), Blocks(*w), "falcon ffn_down {l}");
        }
        assert_eq!(of(&p, "blk.14.ffn_down.weight"), Blocks(Q5_K));
    }

    /// Tied embeddings take the output's format; rows that fit no super-block fall back
    /// (Q4_K to Q5_0, Q6_K to Q8_0, then F16); a 1 x N tensor counts as 1-D.
    #[test]
    fn tied_embeddings_fallbacks_and_trailing_ones() {
        let mut model = llama(8, 384, 1536);
        model.retain(|(n, _)| n != "output.weight");
        model.push(("blk.0.odd.weight".into(), vec![100, 8]));
        model.push(("blk.0.flat.weight".into(), vec![384, 1]));
        let p = plan(Mix::Q4KM, &model, 0, "bert");
        assert_eq!(of(&p, "token_embd.weight"), Blocks(Q8_0), "384 is not a multiple of 256");
        assert_eq!(of(&p, "blk.1.attn_q.weight"), Blocks(Q5_0));
        assert_eq!(of(&p, "blk.0.attn_v.weight"), Blocks(Q8_0), "Q6_K falls back to Q8_0");
        assert_eq!(of(&p, "blk.0.odd.weight"), Target::F16, "100 fits neither 256 nor 32");
        assert_eq!(of(&p, "blk.0.flat.weight"), Target::Keep);
        // Falcon's output is Q8_0; rows of 100 fit no block of 32 either: F16.
        let odd = [TensorRef { name: "output.weight", dims: &[100, 8], float: true }];
        let info = ModelInfo { arch: "falcon".into(), n_layer: 1, n_expert: 0, is_70b: false };
        assert_eq!(Mix::Q4KM.plan(&info, &odd).expect("plans"), [Target::F16]);
    }

    /// Llama 70B: attn_v one step up from Q3_K/Q4_K to Q5_K, Q6_K left alone.
    #[test]
    fn llama_70b_gets_q5_k_attn_v() {
        let model = llama(80, 512, 1024);
        let refs: Vec<TensorRef> = model.iter().map(|(n, d)| TensorRef { name: n, dims: d, float: true }).collect();
        let info = ModelInfo { arch: "llama".into(), n_layer: 80, n_expert: 0, is_70b: true };
        let p = Mix::Q4KM.plan(&info, &refs).expect("plans");
        let of = |name: &str| model.iter().position(|(n, _)| n == name).map(|i| p[i]);
        assert_eq!(of("blk.0.attn_v.weight"), Some(Blocks(Q6_K)));
        assert_eq!(of("blk.11.attn_v.weight"), Some(Blocks(Q5_K)));
        assert_eq!(of("blk.11.attn_q.weight"), Some(Blocks(Q4_K)));
    }

    #[test]
    fn layers_are_read_as_sscanf_does() {
        assert_eq!(layer_of("blk.12.attn_v.weight"), 12);
        assert_eq!(layer_of("blk.x.attn_v.weight"), -1);
        assert_eq!(layer_of("output.weight"), -1);
        assert_eq!(Mix::by_name("Q4_K_M"), Some(Mix::Q4KM));
        assert_eq!(Mix::Q4KM.name(), "Q4_K_M");
    }
}
