"""JANuS-mini v2: a small synthetic world with the structure of the JANuS data, written as raw
sources in the real formats (`generate`), built into records with the real builder (`prepare`).
`world` defines the classes, `render` draws them, `captions` writes their web text."""

# A folder holding this file (or one below it) is JANuS-mini's: the evaluator reads its sets
# with the ImageNet protocol but gives them no ImageNet baselines (janus.evaluate.sets).
SUITE_FILE = "janus_suite.json"
