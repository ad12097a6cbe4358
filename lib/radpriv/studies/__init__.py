"""One module per study: each assembles its experiment from the foundation packages (data, models, llm,
dp, downstream, audit, evaluate) and returns tidy results that its notebook narrates.

- ``overview``  00: the synthetic corpora and the rule baseline
- ``study1``    01: local LLMs classify cardiac MRI reports
- ``study2``    02: LLM label extraction with uncertainty; inclusive vs exclusive downstream
- ``study3``    03: DP-SGD + LoRA over a privacy grid; teacher labels come in as data from here
- ``audit``     04: memorization and membership-inference audit

Studies import the foundation; nothing in the foundation imports a study.
"""
