"""The medical knowledge base: the conditions that records and reference answers come from."""

from cift.kb.loader import KBError, KnowledgeBase, load_kb
from cift.kb.schema import Condition, Finding, Test

__all__ = ["Condition", "Finding", "KBError", "KnowledgeBase", "Test", "load_kb"]
