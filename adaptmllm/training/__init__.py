"""Training: fine-tune with the Trainer (train), DeepSpeed ZeRO (deepspeed) and its memory plan (memory_plan),
checkpoints/resume/out-of-memory handling (resilience), the energy tracker (green), the model a run trains
(setup) and the shipped demo base (demo_base).

May import: adaptmllm.modeling, data, metrics, reporting, config, io, languages, hardware; not inference (a
sibling).
"""
