"""The BentoML scoring service and the scoring maths it shares with batch scoring."""
