// How every layer of the core is written (Conv2d, BatchNorm, Linear,
// MaxPool2d, GlobalAvgPool; ResNet's blocks follow the same rules).
//
// - A layer is a final class. At construction it registers its parameters in
//   the model's Arena and keeps their offsets; values live in `arena.value`,
//   gradients at the same offsets in `arena.grad` (Arena.swift).
// - `forward(x, ...) -> output` writes the layer's own `output` tensor, which
//   the next forward overwrites. Activations are channel-major (C, N, H, W)
//   or (C, N) (Tensor.swift).
// - What backward needs is the layer's cache, held as tensors: the input
//   tensor it was given (a reference, not a copy: the caller leaves it alone
//   until backward) and tensors of its own (batch statistics, argmax
//   positions, column matrices). Never raw pointers into others' memory.
// - `backward(dOut, dX:, accumulate:)`: parameter gradients are always added
//   (`+=`, llm.c's convention: zero once per step, residual fan-in and several
//   heads just work); the input gradient dX is written (`=`), or added when
//   `accumulate` is true. dX is the caller's buffer: the network rotates a few
//   gradient buffers (ResNet.swift's GradBuffers) instead of every layer
//   owning one.
// - dOut is consumed: backward may overwrite it. BatchNorm with a fused ReLU
//   masks it in place, and the residual blocks then use it as the gradient of
//   their identity path.
// - Losses (CrossEntropy) are functions: logits in, loss and dlogits out.
// - Time spent is counted with `ws.measure(part) { ... }` (the workspace's Profile, when set).
