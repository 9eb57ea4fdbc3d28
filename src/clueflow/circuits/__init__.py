"""Circuit stage: the hook-based graph, edge attribution in noising and denoising directions, circuit
selection, AND/OR/ADDER gate labels, faithfulness by real edge patching, and the circuit artifact."""
