"""Applications: what the command line runs, each built on the libraries (data, models, distill,
eval, engine) and the foundation (core, config): training runs, studies, ``segkd compress``,
evaluation of a checkpoint, prediction, export, reports, deployment comparisons, the demo."""
