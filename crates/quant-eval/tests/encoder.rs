//! The encoder on a tiny random BERT written to a temporary directory, against a direct `f64`
//! transcription of BERT's forward pass, one sequence at a time.

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::MinMax;
use quant_eval::{calibrate, importance, load_f32, Batch, EvalError};
use safetensors::tensor::{Dtype, TensorView};

const H: usize = 8;
const HEADS: usize = 2;
const FF: usize = 16;
const LAYERS: usize = 2;
const VOCAB: usize = 20;
const POS: usize = 16;

/// Deterministic values uniform in `[-1, 1)`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = quant_testkit::Rng::new(seed);
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// Every tensor of the tiny model, by name.
fn tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut t = BTreeMap::new();
    let mut seed = 100;
    let mut add = |name: String, shape: Vec<usize>, scale: f32| {
        seed += 1;
        let v = values(shape.iter().product(), seed).iter().map(|x| x * scale).collect();
        t.insert(name, (shape, v));
    };
    add("embeddings.word_embeddings.weight".into(), vec![VOCAB, H], 1.0);
    add("embeddings.position_embeddings.weight".into(), vec![POS, H], 0.5);
    add("embeddings.token_type_embeddings.weight".into(), vec![2, H], 0.1);
    add("embeddings.LayerNorm.weight".into(), vec![H], 1.0);
    add("embeddings.LayerNorm.bias".into(), vec![H], 0.1);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, n, k) in [
            ("attention.self.query", H, H),
            ("attention.self.key", H, H),
            ("attention.self.value", H, H),
            ("attention.output.dense", H, H),
            ("intermediate.dense", FF, H),
            ("output.dense", H, FF),
        ] {
            add(format!("{p}.{name}.weight"), vec![n, k], 0.5);
            add(format!("{p}.{name}.bias"), vec![n], 0.1);
        }
        for norm in ["attention.output", "output"] {
            add(format!("{p}.{norm}.LayerNorm.weight"), vec![H], 1.0);
            add(format!("{p}.{norm}.LayerNorm.bias"), vec![H], 0.1);
        }
    }
    t
}

fn write_model(dir: &Path, t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, skip: Option<&str>) {
    let config = serde_json::json!({
        "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FF, "max_position_embeddings": POS, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu", "position_embedding_type": "absolute",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .filter(|(n, _)| Some(n.as_str()) != skip)
        .map(|(n, (s, v))| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
        bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// BERT's forward pass for one unpadded sequence, in `f64`, written out plainly.
fn reference(t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, ids: &[u32]) -> Vec<f64> {
    let get = |n: &str| -> Vec<f64> { t[n].1.iter().map(|&v| f64::from(v)).collect() };
    let norm = |x: &mut Vec<Vec<f64>>, p: &str| {
        let (g, b) = (get(&format!("{p}.LayerNorm.weight")), get(&format!("{p}.LayerNorm.bias")));
        for row in x.iter_mut() {
            let mean = row.iter().sum::<f64>() / H as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / H as f64;
            for (i, v) in row.iter_mut().enumerate() {
                *v = (*v - mean) / (var + 1e-12).sqrt() * g[i] + b[i];
            }
        }
    };
    let linear = |x: &Vec<Vec<f64>>, p: &str| -> Vec<Vec<f64>> {
        let (w, b) = (get(&format!("{p}.weight")), get(&format!("{p}.bias")));
        let k = x[0].len();
        x.iter()
            .map(|r| (0..b.len()).map(|j| b[j] + (0..k).map(|c| r[c] * w[j * k + c]).sum::<f64>()).collect())
            .collect()
    };
    let (word, pos, ty) = (
        get("embeddings.word_embeddings.weight"),
        get("embeddings.position_embeddings.weight"),
        get("embeddings.token_type_embeddings.weight"),
    );
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .enumerate()
        .map(|(p, &id)| (0..H).map(|i| word[id as usize * H + i] + pos[p * H + i] + ty[i]).collect())
        .collect();
    norm(&mut x, "embeddings");
    let d = H / HEADS;
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        let q = linear(&x, &format!("{p}.attention.self.query"));
        let k = linear(&x, &format!("{p}.attention.self.key"));
        let v = linear(&x, &format!("{p}.attention.self.value"));
        let mut ctx = vec![vec![0f64; H]; ids.len()];
        for h in 0..HEADS {
            for i in 0..ids.len() {
                let s: Vec<f64> = (0..ids.len())
                    .map(|j| (0..d).map(|c| q[i][h * d + c] * k[j][h * d + c]).sum::<f64>() / (d as f64).sqrt())
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    ctx[i][h * d + c] = (0..ids.len()).map(|j| e[j] / z * v[j][h * d + c]).sum();
                }
            }
        }
        let a = linear(&ctx, &format!("{p}.attention.output.dense"));
        for (r, ar) in x.iter_mut().zip(&a) {
            r.iter_mut().zip(ar).for_each(|(v, t)| *v += t);
        }
        norm(&mut x, &format!("{p}.attention.output"));
        let mut f = linear(&x, &format!("{p}.intermediate.dense"));
        f.iter_mut().flatten().for_each(|v| *v = 0.5 * *v * (1.0 + libm::erf(*v / 2f64.sqrt())));
        let o = linear(&f, &format!("{p}.output.dense"));
        for (r, or) in x.iter_mut().zip(&o) {
            r.iter_mut().zip(or).for_each(|(v, t)| *v += t);
        }
        norm(&mut x, &format!("{p}.output"));
    }
    let mean: Vec<f64> = (0..H).map(|i| x.iter().map(|r| r[i]).sum::<f64>() / ids.len() as f64).collect();
    let n = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    mean.iter().map(|v| v / n).collect()
}

/// `seqs` padded with id 0 to the longest, as the tokenizer pads a batch.
fn batch(seqs: &[Vec<u32>]) -> Batch {
    let len = seqs.iter().map(Vec::len).max().unwrap();
    let mut b = Batch { ids: vec![], mask: vec![], count: seqs.len(), len };
    for s in seqs {
        b.ids.extend(s.iter().copied().chain(std::iter::repeat_n(0, len - s.len())));
        b.mask.extend(std::iter::repeat_n(1, s.len()).chain(std::iter::repeat_n(0, len - s.len())));
    }
    b
}

/// The model of `t`, written to a temporary directory and loaded in `f32`.
fn tiny_model(t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> quant_eval::Encoder {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), t, None);
    load_f32(dir.path()).unwrap()
}

#[test]
fn f32_encoder_follows_bert_and_ignores_padding() {
    let t = tensors();
    let model = tiny_model(&t);
    let seqs = vec![vec![1, 5, 7, 2], vec![1, 9, 3, 11, 13, 17, 2], vec![1, 2]];
    let got = model.embed(&batch(&seqs), None).unwrap();
    for (s, row) in seqs.iter().zip(got.chunks_exact(H)) {
        let want = reference(&t, s);
        for (g, w) in row.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 2e-6, "sequence {s:?}: {g} against {w}");
        }
        // Alone, without padding: the same embedding.
        let alone = model.embed(&batch(std::slice::from_ref(s)), None).unwrap();
        for (a, b) in alone.iter().zip(row) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

#[test]
fn calibration_and_importance_see_each_layer_input() {
    let model = tiny_model(&tensors());
    let b = batch(&[vec![1, 5, 7, 2], vec![1, 9, 2]]);
    let imp = importance(&model, std::slice::from_ref(&b)).unwrap();
    assert_eq!(imp.len(), 6 * LAYERS);
    for (name, s) in &imp {
        assert_eq!(s.count, 7, "{name}: the 7 tokens, not the padding");
        let k = if name.ends_with("output.dense.weight") && !name.contains("attention") { FF } else { H };
        assert_eq!(s.sums.len(), k, "{name}");
        assert!(s.sums.iter().all(|v| *v > 0.0));
    }
    let q = &imp["encoder.layer.0.attention.self.query.weight"];
    assert_eq!(q, &imp["encoder.layer.0.attention.self.value.weight"], "q, k, v share their input");
    let params = calibrate(&model, std::slice::from_ref(&b), MinMax::new).unwrap();
    assert_eq!(params.len(), 6 * LAYERS);
    assert!(params.values().all(|p| p.scale() > 0.0));
}

#[test]
fn a_broken_model_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = tensors();
    write_model(dir.path(), &t, Some("encoder.layer.1.output.dense.bias"));
    let e = load_f32(dir.path()).err().unwrap();
    assert!(matches!(e, EvalError::Tensor { ref name, .. } if name == "encoder.layer.1.output.dense.bias"), "{e}");
    let partial = serde_json::json!({"hidden_size": 8, "num_hidden_layers": 2});
    std::fs::write(dir.path().join("config.json"), partial.to_string()).unwrap();
    let e = load_f32(dir.path()).err().unwrap();
    assert!(matches!(e, EvalError::Config { ref what, .. } if what.contains("num_attention_heads")), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(load_f32(empty.path()).err().unwrap(), EvalError::File { .. }));
    // A token outside the vocabulary.
    write_model(dir.path(), &t, None);
    let model = load_f32(dir.path()).unwrap();
    let e = model.embed(&batch(&[vec![1, VOCAB as u32]]), None).unwrap_err();
    assert!(matches!(e, EvalError::Invalid(ref m) if m.contains("vocabulary")), "{e}");
}

#[test]
fn embeddings_do_not_depend_on_the_thread_count() {
    let model = tiny_model(&tensors());
    // One batch under 64 tokens (run on one thread whatever the pool) and one over.
    let small = batch(&[vec![1, 5, 7, 2], vec![1, 9, 2]]);
    let large = batch(
        &(0..12).map(|i| (0..1 + i % 7).map(|t| (1 + t + i) as u32 % VOCAB as u32).collect()).collect::<Vec<_>>(),
    );
    assert!(large.len * large.count >= 64);
    for b in [&small, &large] {
        let on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| model.embed(b, None).unwrap())
        };
        let one = on(1);
        assert_eq!(
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            on(2).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(one.len(), b.count * H);
    }
}
