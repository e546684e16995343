"""Task definitions that tie readers, features, post-processing and the official scorers together
(framework-neutral)."""
