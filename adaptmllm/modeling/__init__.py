"""Models: load a pretrained model and tokenizer or build the tiny one (model), LoRA/QLoRA and layer freezing
(lora), new languages and vocabulary extension (vocabulary).

May import: adaptmllm.metrics, reporting, config, io, languages, hardware.
"""
