"""The adapter bank: every registered version is a LoRA adapter on the same base; imported
adapters join them; K-shot selection picks experts; a mixture of LoRA experts combines them."""
