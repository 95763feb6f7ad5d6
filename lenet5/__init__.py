"""LeNet-5 on MNIST or the bundled handwritten digits."""
