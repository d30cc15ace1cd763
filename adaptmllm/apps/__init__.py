"""Front ends over the runs: the Colab/Jupyter notebook helpers (notebook/), the Gradio playground with human
evaluation (playground/) and the Hugging Face Hub upload (hub).

May import: adaptmllm.runs and everything below; never adaptmllm.cli.
"""
