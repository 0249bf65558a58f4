"""Which layers the unfamiliar score should use (issue 17, next step): class-conditional Mahalanobis distances of
the square-rooted spatial means of layers 1-4, each z-scored on the training photos, summed over a layer set.
Chosen by the mean AUROC over two selection-only changes (Gaussian noise sigma 20, contrast x0.4) that are neither
acceptance sets nor held out; results in bench/results/trust-layers.txt. Torch features, not the served graph:
    .venv/bin/python bench/trust_layers.py RUN     # RUN: the NEU-CLS run of bench/results/trust.md
"""
import sys, numpy as np, torch
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]; sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from pathlib import Path
import trust as T
from defect_model.runs.folders import RunDir
from defect_model.train import checkpoint as ckpt
from defect_model.train.model import build_model
from defect_model.common.config import TrainConfig
from defect_model.train.unfamiliar_score import fit_mahalanobis, mahalanobis_scores
from defect_model.serve.inference import Predictor
torch.set_num_threads(2)
run = RunDir(Path(sys.argv[1]))
cfg = TrainConfig.from_yaml(run.config, strict=False)
payload = ckpt.load_checkpoint(run.checkpoint)
classes = payload["meta"]["classes"]
net = build_model(cfg.backbone, len(classes), cfg.dropout); net.load_state_dict(payload["model"]); net.eval()
pred = Predictor.from_checkpoint(run.checkpoint, backend="torch")
def feats(arrays):
    out = {k: [] for k in ("l1", "l2", "l3", "l4", "l1std", "l2std")}
    with torch.inference_mode():
        for s in range(0, len(arrays), 64):
            x = pred.to_tensor([pred.prepare(a) for a in arrays[s:s+64]])
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            a1 = net.layer1(x); a2 = net.layer2(a1); a3 = net.layer3(a2); a4 = net.layer4(a3)
            for k, a in (("l1", a1), ("l2", a2), ("l3", a3), ("l4", a4)):
                out[k].append(a.mean(dim=(2, 3)).clamp_min(0).sqrt())
            out["l1std"].append(a1.std(dim=(2, 3)).sqrt()); out["l2std"].append(a2.std(dim=(2, 3)).sqrt())
    return {k: torch.cat(v) for k, v in out.items()}
rng = np.random.default_rng(0)
split = run.split
train_rows = T.split_rows(split, "train")
label_of = {c: i for i, c in enumerate(classes)}
train_labels = torch.tensor([label_of[l] for _, l in train_rows])
val = T.photos(T.NEU, T.split_rows(split, "val"))
elpv_rows = T.split_rows(T.ELPV / "split.csv", "val")
elpv = T.photos(T.ELPV, [elpv_rows[i] for i in sorted(rng.choice(len(elpv_rows), 360, replace=False))])
demo = [np.asarray(T.make_sample(T.DEMO_CLASSES[i % len(T.DEMO_CLASSES)], rng, 128)[0].convert("RGB")) for i in range(360)]
sets = {"val": val, "elpv": elpv, "demo": demo, "lighting": [T.lighting_shift(p) for p in val],
        "bright": [T.held_out_shift("bright_light", p) for p in val], "defocus": [T.held_out_shift("defocus", p) for p in val]}
# selection-only shifts (neither acceptance nor held-out): noise and low contrast
sets["noise"] = [np.clip(p.astype(np.float32) + rng.normal(0, 20, p.shape), 0, 255).astype(np.uint8) for p in val]
sets["lowcontrast"] = [(128 + (p.astype(np.float32) - 128) * 0.4).astype(np.uint8) for p in val]
F = {k: feats(v) for k, v in sets.items()}
Ftrain = feats(T.photos(T.NEU, train_rows))
scores = {}
for layer in ("l1", "l2", "l3", "l4", "l1std", "l2std"):
    for mode in ("class", "single"):
        labels = train_labels if mode == "class" else torch.zeros_like(train_labels)
        st = fit_mahalanobis(Ftrain[layer], labels, len(classes) if mode == "class" else 1)
        tr = mahalanobis_scores(Ftrain[layer], st)
        mu, sd = tr.mean(), tr.std()
        scores[(layer, mode)] = {k: (mahalanobis_scores(F[k][layer], st) - mu) / sd for k in sets}
names = [k for k in sets if k != "val"]
def show(label, s):
    print(f"{label:28s}", " ".join(f"{k[:7]}={T.auroc(s['val'], s[k]):.3f}" for k in names), flush=True)

combos = {
    "{4}": ["l4"], "{3,4}": ["l3", "l4"], "{2,3,4}": ["l2", "l3", "l4"], "{1,2,3,4}": ["l1", "l2", "l3", "l4"],
}
sel = ("noise", "lowcontrast")
for name, parts in combos.items():
    summed = {k: sum(scores[(p, "class")][k] for p in parts) for k in sets}
    show("sum " + name, summed)
    print("   selection mean", np.mean([T.auroc(summed["val"], summed[k]) for k in sel]))
