"""Counterfactual evaluation set: questions whose answers exist only in the given passage."""
