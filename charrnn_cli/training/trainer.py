"""The trainer: the model, optimizer, carried state and dropout generator of a run, and the three
things it does: one step, one validation pass, one checkpoint. It holds no schedule: the loop
(loop.py) says when, and passes the learning rate in.

State policy (the one place it is decided): the hidden state starts at zero, is carried from
each chunk to the next, and is reset to zero when the streams wrap at an epoch boundary.
Validation and sampling always start from a zero state of their own.

Exact resume: a checkpoint holds parameters, optimizer state, step, epoch, stream offset,
the carried state and the dropout generator's state, so N steps + resume + M steps gives
the same parameters, bit for bit, as N + M steps straight.
"""

import math

import numpy as np

from ..io import checkpoint as ckpt
from ..nn.model import CharRNN
from ..nn.optim import clip_and_step, global_norm, make_optimizer
from ..parallel.cores import team_size
from ..parallel.dist import Single, on_writer
from ..parallel.solo import SOLO, TeamError, TeamStalled
from ..parallel.team import make_team
from .evaluate import score_sums
from .state import TrainState, TrainingError


_ONE_PROCESS = "--set training.unit_split=1 trains in one process"  # the way out of every team failure


def _team_failed(e, what):
    """A TeamError as the one line the user sees."""
    return TrainingError(f"{e}; {what} ({_ONE_PROCESS})")


class Trainer:
    """What training holds and does: the model, optimizer, progress, carried state and dropout
    generator; one step, one validation pass, one checkpoint."""

    def __init__(self, cfg, corpus, streams, val_data, ck=None, echo=print, comm=None):
        t_cfg, m_cfg = cfg.training, cfg.model
        self.cfg, self.corpus, self.streams, self.val_data = cfg, corpus, streams, val_data
        self.comm = comm or Single()
        self.block = self.comm.block(t_cfg.batch_size)  # this process's streams [first, end)
        self.nl = corpus.vocab.index("\n") if cfg.data.mode == "lines" else None  # lines: items reset the state
        self.val_per_item = math.nan  # lines mode: the last validation's nats per item
        self.local_b = self.block[1] - self.block[0]
        self.model = CharRNN(m_cfg.type, len(corpus.vocab), m_cfg.hidden_size, m_cfg.num_layers, m_cfg.dropout,
                             seed=t_cfg.seed, init=m_cfg.init, init_scale=m_cfg.init_scale,
                             forget_bias=m_cfg.forget_bias, layer_norm=m_cfg.layer_norm,
                             weight_drop=m_cfg.weight_drop, embedding=m_cfg.embedding)
        self.optimizer = make_optimizer(t_cfg.optimizer, self.model.params, t_cfg)
        self.prog = TrainState()
        self.rng = np.random.default_rng(t_cfg.seed + 1)  # dropout masks
        self.state = self.model.zero_state(self.local_b)
        self.team = SOLO  # the processes sharing each step (team.py), started with the first step
        self._before_step = None  # the dropout generator's state while a step can still be dropped (drop_step)
        self.team_size = team_size(t_cfg, m_cfg) if self.comm.size == 1 else 1
        self.stop_requested = lambda: False  # whether a signal asked the run to stop (the loop sets it)
        self.echo = echo
        if ck is not None:
            self._resume_from(ck, echo)

    def _resume_from(self, ck, echo):
        self.model.load_state_dict(ck.arrays)
        try:
            self.optimizer.load_state_arrays(ck.arrays)
        except KeyError:  # another optimizer: its state means something else, so start this one fresh
            echo(f"warning: {ck.path} was trained with {ck.config.training.optimizer}; "
                 f"{self.cfg.training.optimizer} starts with fresh state (the resume is not exact)")
        except ValueError as e:
            raise ckpt.CheckpointError(f"{ck.path}: {e}") from None
        self.prog = TrainState(
            step=ck.scalar("train.step", 0), epoch=ck.scalar("train.epoch", 0), offset=ck.scalar("train.offset", 0),
            chars_seen=ck.scalar("train.chars_seen", 0), elapsed_s=ck.scalar("train.elapsed_s", 0.0),
            best_val=ck.scalar("train.best_val", math.nan), eval_chars=ck.scalar("train.eval_chars", 0),
            lr_anchor=tuple(ck.get("train.lr_anchor", np.zeros(2)).tolist()),
            history={"train": ck.history("train").tolist(), "val": ck.history("val").tolist()})
        if self.prog.offset >= self.streams.stream_len:
            self.prog.offset, self.prog.epoch = 0, self.prog.epoch + 1
        carried = ck.state(self.model)  # (L, B, H): this process carries its block of streams
        if carried is not None and self.prog.offset > 0:
            first, end = self.block
            self.state = tuple(np.ascontiguousarray(s[:, first:end]) for s in carried)
        self.rng = ck.rng()

    def epoch_float(self):
        return self.prog.epoch + self.prog.offset / self.streams.stream_len

    def step(self, lr):
        """One update on the next chunk at learning rate lr; returns (loss, characters)."""
        prog, model, comm, B = self.prog, self.model, self.comm, self.cfg.training.batch_size
        if prog.offset == 0:
            self.state = model.zero_state(self.local_b)  # epoch boundary: the streams wrap
        self._before_step = self.rng.bit_generator.state  # until the update, all this step has changed
        x, y = self.streams.chunk(prog.offset, self._chunk_length())  # (T, b): this process's streams
        masks = model.dropout_masks(x.shape[0], B, self.rng)  # drawn for all B streams, as one process would
        if masks is not None and self.local_b != B:
            first, end = self.block
            masks = [np.ascontiguousarray(m[:, :, first:end]) for m in masks]
        wmasks = model.weight_masks(self.rng)  # the same in every process: one mask for all B streams
        resets = None if self.nl is None else x == self.nl  # an item starts: its state starts from zero
        team = self._team()
        team.begin(x, self.state, masks, resets, targets=y, wmasks=wmasks)  # the team's other processes start the same step
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run: the finite check below says so
            try:
                loss, new_state, cache = model.forward(x, y, self.state, masks, resets, team=team, wmasks=wmasks)
                grads, _ = model.backward(cache, team=team)
            except TeamStalled:
                raise  # a signal, and a helper that does not answer: the loop drops the step and saves
            except TeamError as e:
                raise _team_failed(e, "the step was not applied") from None
        grads = comm.average_gradients(grads)  # gradients of the mean loss over all B x T characters
        loss = comm.mean(loss)
        norm = global_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            bad = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            raise TrainingError(f"the {bad[0]} became {bad[1]} at step {prog.step + 1}; stopped without saving "
                                f"(try a lower training.learning_rate or grad_clip)")
        self.lr, t, t_cfg = lr, self.optimizer.t + 1, self.cfg.training
        self._before_step = None  # the update changes the parameters in place: no way back from here
        try:
            share = team.begin_update(lr, norm, t)  # the team's other processes update their blocks
            clip_and_step(self.optimizer, self.model.params, grads, t_cfg.clip_mode, t_cfg.grad_clip, lr, norm, t,
                          share)  # and this process its own (all of it in one process)
            team.end_update()
        except TeamStalled:
            raise  # the parameters part updated: drop_step says so, and nothing is saved
        except TeamError as e:  # parameters part updated: the last checkpoint is the run's state
            raise _team_failed(e, "the step was only partly applied, and it is not saved") from None
        self.state = new_state
        prog.step += 1
        prog.offset += x.shape[0]
        prog.chars_seen += x.size * comm.size
        if prog.offset >= self.streams.stream_len:
            prog.offset, prog.epoch = 0, prog.epoch + 1
            self.state = model.zero_state(self.local_b)
        return loss, x.size * comm.size

    def _chunk_length(self):
        """training.random_cuts: an epoch's first chunk is 1 to T characters long, drawn from the seed
        and the epoch alone (every process draws the same), so the cuts of truncated BPTT fall
        elsewhere in each epoch; every other chunk is T long (None)."""
        t_cfg = self.cfg.training
        if not t_cfg.random_cuts or self.prog.offset != 0:
            return None
        draw = np.random.default_rng([t_cfg.seed, self.prog.epoch, 0x637574])  # "cut": apart from other draws
        return int(draw.integers(1, t_cfg.seq_length + 1))

    def drop_step(self):
        """After a step stopped before its update (a second Ctrl-C): put back the one thing it had
        changed, the dropout generator, so the run is as the last finished step left it, ready to
        save. False once the update has begun."""
        if self._before_step is None:
            return False
        self.rng.bit_generator.state, self._before_step = self._before_step, None
        return True

    def _update(self, grads, args, share):
        """The update (lr, norm, t = args) on block share(n) of every parameter: what each helper
        process of the team runs on its block when process 0 begins an update (team.py)."""
        t_cfg = self.cfg.training
        clip_and_step(self.optimizer, self.model.params, grads, t_cfg.clip_mode, t_cfg.grad_clip, *args, share)

    def _team(self):
        if self.team is SOLO and self.team_size > 1:
            try:
                self.team = make_team(self.team_size, self.model, self.local_b, self.cfg.training.seq_length,
                                      self._update, list(self.optimizer.state.values()))
            except OSError as e:  # no memory or process slot for the helper
                raise TrainingError(f"could not start the helper processes of the training step: {e} "
                                    f"({_ONE_PROCESS})") from None
            self.team.stop_requested, self.team.warn = self.stop_requested, self.echo
        return self.team

    def close(self):
        """Stop the team's other processes (a no-op in one process)."""
        self.team.close()

    def validation_loss(self, max_chars=None):
        """The validation loss over the first max_chars characters (default: the run's fixed amount)."""
        t_cfg, comm = self.cfg.training, self.comm
        try:
            total, count, ends = score_sums(self.model, self.val_data, t_cfg.batch_size, t_cfg.seq_length,
                                            max_chars or self.prog.eval_chars or t_cfg.eval_max_chars, comm.rank,
                                            comm.size, nl=self.nl, team=self._team())
        except TeamError as e:
            raise TrainingError(f"{e} (during validation; {_ONE_PROCESS})") from None
        total, count, ends = comm.sum((total, count, ends))  # each process scored its block of the streams
        self.val_per_item = total / ends if ends else math.nan
        return total / count if count else math.nan

    def record_validation(self, loss, best_path):
        """Add a validation result to the history; save best_path when it improves."""
        prog = self.prog
        prog.history["val"].append([prog.step, prog.chars_seen, prog.elapsed_s, loss])
        if not (loss >= prog.best_val) and math.isfinite(loss):  # first finite evaluation or an improvement
            prog.best_val = loss
            self.save(best_path)

    def save(self, path):
        """Write a checkpoint (the writer does; every process takes part in gathering the state)."""
        comm = self.comm
        state = comm.gather_streams(self.state)
        comm.check_identical(self.model.params)

        def write():
            arrays = ckpt.build_arrays(self.model, self.corpus.vocab, self.cfg, self.optimizer, self.prog.arrays(),
                                       state, self.rng, self.prog.history)
            arrays.update({"data.length": np.array(len(self.corpus.data), dtype=np.int64),
                           "data.sha1": np.array(self.corpus.sha1),
                           "train.layout": np.array([comm.size, self.team_size], dtype=np.int64)})
            ckpt.atomic_save_npz(path, arrays)

        on_writer(comm, write)
