"""Fine-tuning: the instrumented trl/peft recipe and the GPU-memory model."""
