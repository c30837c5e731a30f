"""What comes from and goes to disk: the config, the text and its encoded cache, the vocabulary,
checkpoints, atomic files and locks. Everything read here is untrusted until checked."""
