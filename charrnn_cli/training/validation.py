"""How much validation text each validation scores: from the config and the data, never a clock."""


class ValidationPlan:
    """How much validation text to score: eval_max_chars (and at most the split), or fewer when
    scoring that much would take more than eval_share of the run's time. Decided from the config
    and the data alone, never from a clock, so one config on one text scores the same characters
    on any machine and under any load, and its losses (and best.npz) compare across runs.

    A validation scores forward only, which costs about 1/FORWARD_RATIO of a training step per
    character (2.4-2.7 for LSTM, GRU and RNN, measured on 2 cores). So between two validations
    eval_every steps train eval_every x batch_size x seq_length characters, and validation keeps
    within eval_share by scoring at most share / (1 - share) x FORWARD_RATIO times that.
    >>> from charrnn_cli.io.config import from_dict
    >>> ValidationPlan(from_dict({"training": {"eval_every": 10, "batch_size": 4, "seq_length": 10}}).training,
    ...                10 ** 6).chars
    111
    """

    FORWARD_RATIO = 2.5

    def __init__(self, t_cfg, n_val):
        self.t_cfg = t_cfg
        self.cap = max(1, min(n_val - 1, t_cfg.eval_max_chars or n_val))
        share = t_cfg.eval_share
        trained = t_cfg.eval_every * t_cfg.batch_size * t_cfg.seq_length
        allowed = self.cap if share is None else int(share / (1 - share) * self.FORWARD_RATIO * trained)
        self.chars = max(1, min(self.cap, allowed))
        self.seconds = None  # how long the last validation took

    def decide(self, run):
        """Fix run.prog.eval_chars (a resumed run keeps the number it had)."""
        if not run.prog.eval_chars:
            run.prog.eval_chars = self.chars

    def describe(self, n_val, eval_chars=0):
        """The opening line on how much each validation scores (`eval_chars`: a resumed run's)."""
        n = eval_chars or self.chars
        if n >= n_val - 1:
            return f"validation: all {n_val - 1:,} predicted characters of the split, each time"
        return (f"validation: the first {n:,} of the split's {n_val - 1:,} predicted characters, each time "
                f"(training.eval_max_chars, and eval_share of the time between validations)")

    def reserve(self, t_cfg):
        """Seconds to keep for the final validation inside max_minutes."""
        if self.seconds is not None:
            return self.seconds
        return (t_cfg.eval_share or 0.0) * 60 * (t_cfg.max_minutes or 0.0)
