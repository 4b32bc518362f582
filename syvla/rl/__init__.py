"""Similar-Sample Guided RL (paper §3.3, App. A "Reinforcement Learning").

Plain functions and classes, no Ray (the actors in `syvla/rl/actors.py` wrap them):

- `advantages`: GAE per trajectory, clipped to [-0.8, 0.8]; Monte-Carlo returns;
  expert samples get a fixed advantage of 1.0.
- `fpo`: the FPO-style likelihood ratio from conditional flow-matching losses on
  stored (time, noise) pairs, and the clipped PPO objective on it.
- `retrieval`: CLIP image encoder, the expert-sample index and its weighted
  multi-view cosine top-k.
- `value`: the ~100M SigLIP value model, its Huber loss and Monte-Carlo warm-up.
"""
