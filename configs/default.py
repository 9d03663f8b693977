"""Every lstmgen field, with its default. Other configs start from this one and change a few."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # The one root of all randomness: init, batches, dropout, samples.

  config.data = ml_collections.ConfigDict()
  config.data.corpus = 'grimm'  # Named corpus ('grimm', 'shakespeare'), downloaded once and cached.
  config.data.path = ''  # A local UTF-8 text file; wins over `corpus` when set.
  config.data.val_fraction = 0.1  # The last fraction of the text (by position) is validation.
  config.data.strip_gutenberg = True  # Keep only the book between Gutenberg START/END markers.
  config.data.decode_errors = 'strict'  # 'replace' turns invalid UTF-8 into U+FFFD instead of failing.
  config.data.vocab_path = ''  # Reuse this vocab.json (e.g. another run's) instead of the corpus's.

  config.model = ml_collections.ConfigDict()
  config.model.embed_size = 64  # Character embedding width (a row gather).
  config.model.hidden_size = 256  # LSTM units per layer.
  config.model.num_layers = 2
  config.model.dropout = 0.5  # On each LSTM layer's output (between layers and before the logits).
  # DropConnect on the recurrent weights (AWD-LSTM's weight drop): one mask per step for the batch.
  config.model.weight_drop = 0.0
  config.model.forget_bias = 1.0  # Initial forget-gate bias: remember by default early in training.

  config.dtype = 'float32'  # Matmul compute dtype ('float32' or 'bfloat16'); params and state stay fp32.
  config.scan_unroll = 1  # Time steps per iteration of the forward lax.scan.
  # On the CPU backend, each LSTM step's elementwise work as one fused C++ kernel, built on first
  # use with the host's compiler (False, or no compiler: the same steps in jax.numpy).
  config.cpu_kernels = True
  # On a CUDA GPU in float32, each LSTM layer as cuDNN's fused LSTM (jax.experimental.rnn) instead
  # of the scan: same parameters and results to rounding. Ignored on other backends and in bf16.
  config.cudnn = False

  config.batch_size = 128  # Global batch (sequences per step), split over all devices.
  config.seq_len = 100  # Characters per training window (targets per row).
  # Truncated BPTT across batches: each row reads its own contiguous stream of the text and the
  # LSTM state carries from one step to the next (char-rnn's batching), instead of random windows
  # that each start from zeros.
  config.stateful = False
  config.learning_rate = 1e-3  # Adam.
  config.lr_schedule = 'constant'  # Or 'cosine': decays to 1% of learning_rate at num_steps.
  config.grad_clip_norm = 5.0  # Global-norm gradient clipping.
  config.num_steps = 2000

  config.log_every = 50  # Steps between log lines (loss, chars/s, ETA).
  config.eval_every = 500  # Steps between validation passes over the whole validation split.
  config.eval_batch_size = 128  # Parallel contiguous streams the validation text is cut into.
  config.checkpoint_every = 500  # Steps between checkpoints (and one at the end).
  config.keep_checkpoints = 3  # Checkpoints kept on disk; older ones are deleted.
  config.sample_every = 500  # Steps between samples printed during training.
  config.sample_length = 600  # Characters per sample.
  config.sample_temperatures = (1.0, 0.5, 0.1)
  config.sample_prompt_length = 100  # Validation characters that prime each training-time sample.
  return config
