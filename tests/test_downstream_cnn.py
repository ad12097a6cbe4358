"""Two-view image classifiers: devices, ResNet-50 (random init, local weights only), small CNN training."""

import numpy as np
import pandas as pd
import pytest
import torch

from radpriv.downstream.cnn import (ArrayCases, CNNTrainConfig, ResNet50TwoView, SmallCNN, load_resnet50, mean_auc,
                                    predict_proba, torchvision_to_hf_resnet, train_classifier)
from radpriv.device import resolve_device


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cnn_train_config_validation():
    with pytest.raises(ValueError, match="lr must be > 0"):
        CNNTrainConfig(lr=0)
    assert CNNTrainConfig(epochs=3).to_dict()["epochs"] == 3


def test_small_cnn_two_views_forward():
    m = SmallCNN(n_labels=5)
    out = m(torch.rand(3, 2, 48, 48))
    assert out.shape == (3, 5)
    with pytest.raises(ValueError, match="expected 2 views"):
        m(torch.rand(3, 1, 48, 48))


def test_resnet50_two_view_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = ResNet50TwoView(n_labels=4, weights=None)  # random init: nothing is downloaded
    n_params = sum(p.numel() for p in model.backbone.parameters())
    assert 23_000_000 < n_params < 24_000_000  # the ResNet-50 architecture
    x = torch.rand(2, 2, 32, 32)  # two tiny cases, two views each
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    model.train()
    logits = model(x)
    assert logits.shape == (2, 4)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    loss.backward()
    assert model.head[1].weight.grad.abs().sum() > 0
    stem = model.backbone.embedder.embedder.convolution.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    # the head sees both views: its input is 2 x 2048 features
    assert model.head[1].in_features == 2 * 2048


def _torchvision_names(hf_state: dict) -> dict:
    """Independent reverse mapping (HF -> torchvision names) used to build a torchvision-style checkpoint."""
    out = {}
    for k, v in hf_state.items():
        k2 = (k.replace("embedder.embedder.convolution.", "conv1.").replace("embedder.embedder.normalization.", "bn1."))
        if k2.startswith("encoder.stages."):
            _, _, s, _, j, *rest = k2.split(".")
            base = f"layer{int(s) + 1}.{j}."
            if rest[0] == "shortcut":
                k2 = base + ("downsample.0." if rest[1] == "convolution" else "downsample.1.") + ".".join(rest[2:])
            else:  # layer.{c}.convolution|normalization.x
                c = int(rest[1]) + 1
                k2 = base + (f"conv{c}." if rest[2] == "convolution" else f"bn{c}.") + ".".join(rest[3:])
        out[k2] = v
    out["fc.weight"] = torch.zeros(1000, 2048)
    out["fc.bias"] = torch.zeros(1000)
    return out


def test_load_resnet50_from_local_files(tmp_path):
    torch.manual_seed(1)
    ref = load_resnet50(None)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    # torchvision-style .pth
    torch.save(_torchvision_names(state), tmp_path / "resnet50_tv.pth")
    got = load_resnet50(tmp_path / "resnet50_tv.pth").state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    # Hugging Face checkpoint directory (save_pretrained)
    ref.save_pretrained(tmp_path / "hf")
    got = load_resnet50(tmp_path / "hf").state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    # a mapping check of the key conversion itself
    conv = torchvision_to_hf_resnet({"layer2.0.downsample.1.running_mean": torch.zeros(512),
                                     "layer4.2.conv3.weight": torch.zeros(1), "bn1.bias": torch.zeros(1)})
    assert set(conv) == {"encoder.stages.1.layers.0.shortcut.normalization.running_mean",
                         "encoder.stages.3.layers.2.layer.2.convolution.weight", "embedder.embedder.normalization.bias"}


def test_load_resnet50_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_resnet50(tmp_path / "missing.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a ResNet-50 state dict"):
        load_resnet50(tmp_path / "bad.pt")


def test_train_classifier_runs_and_keeps_history():
    rng = np.random.default_rng(0)
    x = rng.random((24, 2, 32, 32), dtype=np.float32)
    y = (rng.random((24, 3)) < 0.4).astype(np.float32)
    fit = train_classifier(SmallCNN(3, width=4), ArrayCases(x[:16], y[:16]), ArrayCases(x[16:], y[16:]),
                           CNNTrainConfig(epochs=2, batch_size=8, device="cpu", progress=False))
    assert list(fit.history.epoch) == [1, 2] and fit.best_epoch in (1, 2) and fit.device == "cpu"
    p = predict_proba(fit.model, x[16:], device="cpu")
    assert p.shape == (8, 3) and ((p > 0) & (p < 1)).all()


def test_mean_auc_skips_single_class_columns():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.4]])
    assert mean_auc(y, p) == 1.0


@pytest.mark.slow
def test_small_cnn_learns_synthetic_radiographs():
    """On a tiny synthetic elbow set with three clearly drawn findings, test AUC is well above chance."""
    from radpriv.data.synthetic_images import synthesize_images

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    rng = np.random.default_rng(0)
    findings = ["osteosynthesis_material", "joint_widening", "fat_pad_posterior"]
    from radpriv.schemas import load_schema

    ids = load_schema("elbow").ids
    n = 160
    rows = []
    for i in range(n):
        r = {"report_id": f"t{i}", **{f: "not_mentioned" for f in ids}}
        for f in findings:
            r[f] = "present" if rng.random() < 0.4 else "absent"
        rows.append(r)
    df = pd.DataFrame(rows)
    si = synthesize_images(df, region="elbow", size=48, progress=False)
    y = si.visible[findings].to_numpy().astype(np.float32)
    tr, va, te = slice(0, 100), slice(100, 125), slice(125, n)
    fit = train_classifier(SmallCNN(len(findings), width=12), ArrayCases(si.images[tr], y[tr]),
                           ArrayCases(si.images[va], y[va]),
                           CNNTrainConfig(epochs=25, batch_size=20, lr=3e-3, device="cpu", progress=False))
    p = predict_proba(fit.model, si.images[te], device="cpu")
    auc = mean_auc(y[te], p)
    print(f"small CNN test AUC {auc:.3f}")
    assert auc > 0.7


def test_manifest_image_study_end_to_end_on_png_files(tmp_path):
    """A user's radiographs as PNG files + an image manifest -> one model per label set -> AUC tables."""
    from PIL import Image

    from radpriv.data.image_manifest import read_image_manifest
    from radpriv.data.synthetic import generate
    from radpriv.data.synthetic_images import synthesize_images
    from radpriv.downstream import build_label_sets
    from radpriv.downstream.pipeline import manifest_image_study
    from radpriv.schemas import load_schema

    df = generate("elbow", n=40)
    si = synthesize_images(df, size=32, progress=False)
    rows = []
    for rid, img, split in zip(si.report_ids, si.images, df.split):
        paths = {}
        for v, view in enumerate(si.views):
            p = tmp_path / f"{rid}_{view}.png"
            Image.fromarray((img[v] * 255).astype(np.uint8)).save(p)
            paths[f"path_{view}"] = p.name
        rows.append({"report_id": rid, "split": split, **paths})
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    manifest = read_image_manifest(tmp_path / "images.csv", "elbow")
    sets = build_label_sets({"truth": df}, load_schema("elbow"))
    cmp = manifest_image_study(manifest, sets, si.visible, model="small_cnn", size=32,
                               config=CNNTrainConfig(epochs=1, batch_size=8, device="cpu", progress=False),
                               )
    assert set(cmp.runs) == {"truth_inclusive", "truth_exclusive"}
    assert cmp.y_test.shape[0] == (df.split == "test").sum()
    macro = cmp.macro_auc()
    assert macro.macro_auc.between(0, 1).all()
