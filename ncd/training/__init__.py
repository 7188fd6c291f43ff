"""Small programs around a compiled spec that the papers' experiments need: pruning masks,
dead-neuron rates and activation codes read from taps, gradient noise, the N2N reward.

Each lives in its own module and works on any torch module (a compiled spec or not); none of
them changes what a spec computes.
"""
