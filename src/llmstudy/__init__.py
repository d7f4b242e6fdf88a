"""llmstudy: the library behind an executable study of fine-tuning and serving LLMs on Hopper GPUs."""

__version__ = "0.1.0"
