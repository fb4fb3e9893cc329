"""Certified training: losses, schedules (eps, kappa, beta, learning rate), trainer loop."""
