"""Rule-based NegEx/ConText labeler."""

import re
import shutil

import pytest
import yaml
from sklearn.metrics import f1_score

from radpriv import paths
from radpriv.baselines import RuleLabeler
from radpriv.baselines.rules import RuleError
from radpriv.data import load_dataset
from radpriv.data import synthetic as syn
from radpriv.schemas import State, available_schemas, load_schema

CXR = RuleLabeler("chexpert14")


@pytest.mark.parametrize("text,finding,state", [
    ("No pleural effusion.", "pleural_effusion", State.ABSENT),
    ("Pleural effusion is not seen.", "pleural_effusion", State.ABSENT),
    ("There is a small left pleural effusion.", "pleural_effusion", State.PRESENT),
    ("Possible pneumonia.", "pneumonia", State.UNCERTAIN),
    ("Pneumothorax cannot be excluded.", "pneumothorax", State.UNCERTAIN),
    ("Findings most likely represent atelectasis.", "atelectasis", State.UNCERTAIN),
    ("No change in the mild cardiomegaly.", "cardiomegaly", State.PRESENT),        # pseudo-negation
    ("No effusion but consolidation is present.", "consolidation", State.PRESENT),  # scope ends at 'but'
    ("No effusion but consolidation is present.", "pleural_effusion", State.ABSENT),
    ("The trachea is midline.", "edema", State.NOT_MENTIONED),
    # general cue patterns, beyond any generator's wording
    ("Cannot exclude a small apical pneumothorax.", "pneumothorax", State.UNCERTAIN),
    ("Left basilar opacity could reflect atelectasis.", "atelectasis", State.UNCERTAIN),
    ("Small left effusion versus pleural thickening.", "pleural_effusion", State.UNCERTAIN),
    ("Pneumonia has not been ruled out.", "pneumonia", State.UNCERTAIN),
    ("The pneumothorax has resolved.", "pneumothorax", State.ABSENT),
    ("Pulmonary oedema is no longer seen.", "edema", State.ABSENT),
    # a clause-opening negation reaches the whole list, however long
    ("No pleural effusion, pulmonary edema, pneumothorax or lobar consolidation in either lung.", "consolidation", State.ABSENT),
    ("No pleural effusion; there is a small pneumothorax.", "pneumothorax", State.PRESENT),
    # the indication line is not a finding; a pleural line is not a support device
    ("INDICATION: evaluate for pneumonia.\nFINDINGS: Clear lungs.", "pneumonia", State.NOT_MENTIONED),
    ("Visceral pleural line at the left apex.", "support_devices", State.NOT_MENTIONED),
])
def test_context_rules(text, finding, state):
    assert CXR.label(text)[finding] is state


@pytest.mark.parametrize("schema,text,finding,state", [
    ("elbow", "Nondisplaced fracture of the radial head.", "fracture_displaced", State.NOT_MENTIONED),
    ("elbow", "Nondisplaced fracture of the radial head.", "fracture_radial_head", State.PRESENT),
    ("elbow", "Fracture of the head of the radius with displaced fragments.", "fracture_displaced", State.PRESENT),
    ("elbow", "Displaced anterior fat pad.", "fracture_displaced", State.NOT_MENTIONED),
    ("elbow", "Small joint effusion with intra-articular fluid.", "fracture_intraarticular", State.NOT_MENTIONED),
    ("thumb", "MCP joint subluxation.", "mcp_joint_dislocation", State.NOT_MENTIONED),
    ("thumb", "Avulsion fragment at the ulnar collateral ligament.", "avulsion_fragment", State.PRESENT),
    ("clavicle", "Indication: rule out fracture.\nFindings: Normal alignment.", "fracture", State.NOT_MENTIONED),
    ("ctrate18", "No lymph node of pathological size or shape was found at any of the mediastinal, hilar or axillary stations.",
     "lymphadenopathy", State.ABSENT),
    ("ctrate18", "Dense calcific plaque in the proximal LAD.", "coronary_artery_wall_calcification", State.PRESENT),
    ("ctrate18", "Calcified plaques in the coronary arteries.", "arterial_wall_calcification", State.NOT_MENTIONED),
    ("ctrate18", "The cardiothoracic ratio is increased.", "cardiomegaly", State.PRESENT),
    ("ctrate18", "Pericardial small effusion anteriorly.", "pleural_effusion", State.NOT_MENTIONED),
])
def test_finding_patterns_generalise(schema, text, finding, state):
    assert RuleLabeler(schema).label(text)[finding] is state


def test_strongest_mention_wins_and_parent_propagates():
    out = CXR.label("No consolidation in the left lung. Consolidation in the right lower lobe.")
    assert out["consolidation"] is State.PRESENT
    assert out["lung_opacity"] is State.PRESENT  # parent of consolidation
    assert out["no_finding"] is State.ABSENT
    assert CXR.label("Endotracheal tube in place. The lungs are clear.")["no_finding"] is State.PRESENT


def test_other_regions_are_ignored():
    thumb = RuleLabeler("thumb")
    out = thumb.label("A fracture of the distal radius at the wrist is partially visualized. No thumb fracture.")
    assert out["fracture"] is State.ABSENT


@pytest.mark.parametrize("text,category", [
    ("LVEF 35 %. Subendocardial late gadolinium enhancement in the LAD territory. Impression: chronic infarction.", "ischemic"),
    ("LVEF 22 %. Global hypokinesia. Impression: non-ischemic dilated cardiomyopathy.", "dilated_cardiomyopathy"),
    ("Maximal wall thickness 22 mm. Impression: hypertrophic cardiomyopathy.", "hypertrophic_cardiomyopathy"),
    ("Subepicardial LGE with edema. Impression: acute myocarditis.", "myocarditis"),
    ("Native T1 1180 ms. Impression: cardiac amyloidosis.", "infiltrative_storage"),
    ("Impression: constrictive pericarditis.", "other"),
    ("LVEF 62 %. No late gadolinium enhancement. No evidence of myocarditis.", "normal"),
    ("LVEF 62 %. Mild mitral regurgitation. No late gadolinium enhancement.", "normal"),  # trivial valve finding
    ("Patchy septal LGE. Impression: pattern suggestive of cardiac sarcoidosis.", "infiltrative_storage"),  # hedged
    ("Left ventricular ejection fraction of 24 %. No scar.", "dilated_cardiomyopathy"),
])
def test_cmr_classification(text, category):
    assert RuleLabeler("cmr").classify(text) == category


def test_every_schema_has_rules_for_every_finding():
    for name in available_schemas():
        RuleLabeler(name)  # raises if a finding has no patterns
        assert (paths.RULES / f"{name}.yaml").exists()


def test_rules_file_errors_name_file_and_key(tmp_path):
    (tmp_path / "context.yaml").write_text((paths.RULES / "context.yaml").read_text())
    (tmp_path / "chexpert14.yaml").write_text("findings:\n  cardiomegaly: [cardiomegaly]\n")
    with pytest.raises(RuleError, match=r"chexpert14.yaml: no patterns for finding\(s\) \['enlarged_cardiomediastinum'"):
        RuleLabeler("chexpert14", rules_dir=tmp_path)
    good = (paths.RULES / "chexpert14.yaml").read_text()
    (tmp_path / "chexpert14.yaml").write_text(good.replace("  cardiomegaly:\n", "  cardiomegaly:\n  - '(unclosed'\n"))
    with pytest.raises(RuleError, match=r"chexpert14.yaml: key 'findings.cardiomegaly': invalid regular expression"):
        RuleLabeler("chexpert14", rules_dir=tmp_path)
    (tmp_path / "chexpert14.yaml").write_text("findings:\n  spleen: [spleen]\n")
    with pytest.raises(RuleError, match=r"chexpert14.yaml, field 'findings': 'spleen' is not a finding of schema chexpert14; use its ids"):
        RuleLabeler("chexpert14", rules_dir=tmp_path)
    with pytest.raises(RuleError, match=r"ctrate18.yaml: no rules file"):
        RuleLabeler("ctrate18", rules_dir=tmp_path)


def test_user_schema_gets_rules_from_a_yaml_file(tmp_path):
    (tmp_path / "context.yaml").write_text((paths.RULES / "context.yaml").read_text())
    schema = tmp_path / "knee.yaml"
    schema.write_text("name: knee\ntask: multilabel\nfindings:\n  - {id: effusion}\n  - {id: fracture}\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "context.yaml").write_text((paths.RULES / "context.yaml").read_text())
    (rules / "knee.yaml").write_text("findings:\n  effusion: [effusion, joint fluid]\n  fracture: [fracture]\n")
    out = RuleLabeler(load_schema(schema), rules_dir=rules).label("Small joint fluid. No fracture.")
    assert out == {"effusion": State.PRESENT, "fracture": State.ABSENT}


# ------------------------------------------------------------------------------------------------
# the rules against the synthetic corpora's phrase banks
# ------------------------------------------------------------------------------------------------
def _rule_text(schema_name: str) -> str:
    return ((paths.RULES / f"{schema_name}.yaml").read_text() + (paths.RULES / "context.yaml").read_text()).lower()


@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_no_heldout_phrasing_occurs_in_the_rule_files(corpus):
    """The rules were written from the development bank: no multi-word phrasing of the held-out bank
    (a finding phrase, sentence, or the fixed wording of a template) occurs verbatim in them."""
    rules = _rule_text(syn.CORPORA[corpus]["schema"])
    held = syn.bank_phrases(corpus, "heldout") - syn.bank_phrases(corpus, "development")
    assert len(held) > 50
    found = []
    for phrase in held:
        templated = "{" in phrase
        for frag in re.split(r"\{\w+\}", phrase):
            frag = syn._strip_article(frag.strip(" .,;:()").lower())
            if len(frag.split()) >= (3 if templated else 2) and frag in rules:
                found.append((phrase, frag))
    assert not found, found


def _macro_f1(frame, labeler, schema) -> float:
    pred = labeler.label_frame(frame)
    if schema.task == "single":
        return f1_score(frame["label"], pred["label"], average="macro", zero_division=0)
    y = (frame[schema.ids] == "present").astype(int).to_numpy()
    p = (pred[schema.ids] == "present").astype(int).to_numpy()
    keep = y.sum(0) > 0
    return f1_score(y[:, keep], p[:, keep], average="macro", zero_division=0)


@pytest.fixture(scope="module")
def cue_blind_rules(tmp_path_factory):
    """The bundled rules with every negation/uncertainty trigger switched off (mentions only)."""
    d = tmp_path_factory.mktemp("cue_blind")
    ctx = yaml.safe_load((paths.RULES / "context.yaml").read_text())
    (d / "context.yaml").write_text(yaml.safe_dump({k: (v if k == "window" else ["(?!)"]) for k, v in ctx.items()
                                                    if k != "clause_negation"}))
    for f in paths.RULES.glob("*.yaml"):
        if f.name != "context.yaml":
            shutil.copy(f, d / f.name)
    return d


@pytest.mark.parametrize("name", ["synthetic_clavicle", "synthetic_elbow", "synthetic_thumb", "synthetic_cxr", "synthetic_ct"])
def test_rules_generalise_to_the_heldout_phrase_bank(name, cue_blind_rules):
    """Scored as the notebooks score them -- on validation/test reports, all written from the held-out bank --
    the rules stay strong: macro F1 >= 0.85 (measured 0.91-0.96), within 0.12 of their score on the
    development-bank (train) reports, and >= 0.2 above the same mention patterns without the context rules
    (so unseen negation and hedge wording is handled, not just unseen nouns matched)."""
    ds = load_dataset(name)
    ev, tr = ds.frame[ds.frame.split != "train"], ds.frame[ds.frame.split == "train"]
    assert set(ev.phrase_bank) == {"heldout"} and set(tr.phrase_bank) == {"development"}
    rules = RuleLabeler(ds.schema)
    f_ev, f_tr = _macro_f1(ev, rules, ds.schema), _macro_f1(tr, rules, ds.schema)
    f_blind = _macro_f1(ev, RuleLabeler(ds.schema, rules_dir=cue_blind_rules), ds.schema)
    assert f_ev >= 0.85, f_ev
    assert f_ev >= f_tr - 0.12, (f_ev, f_tr)
    assert f_ev >= f_blind + 0.2, (f_ev, f_blind)


def test_cmr_rules_on_the_heldout_phrase_bank():
    ds = load_dataset("synthetic_cmr")
    ev = ds.frame[ds.frame.split != "train"]
    assert set(ev.phrase_bank) == {"heldout"}
    f_ev = _macro_f1(ev, RuleLabeler(ds.schema), ds.schema)
    majority = f1_score(ev.label, [ev.label.mode()[0]] * len(ev), average="macro", zero_division=0)
    reader = f1_score(ev.label, ev.reader, average="macro", zero_division=0)  # the simulated cardiologist
    assert f_ev >= 0.85 and f_ev >= majority + 0.6 and f_ev >= reader - 0.1, (f_ev, majority, reader)
