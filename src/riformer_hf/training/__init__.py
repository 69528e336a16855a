"""The `riformer-train` program, in the shape of transformers' example scripts: `arguments` (data, models, run,
recipe; command line or JSON), `checks` (before any data is read), `builders` (data, teachers, student, processor,
trainer), `checkpoints` (whole or absent) and `run.main()`. Importing the package loads none of them."""
