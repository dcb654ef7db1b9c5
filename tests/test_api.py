import numpy as np

import dinoeval


def test_top_level_functions_give_the_cli_results():
    run = dinoeval.run_knn("pixels", "digits:train", "digits:test[:40]",
                           config=dinoeval.KnnConfig(ks=(5,)))
    direct = dinoeval.knn_classify(run.train.features, run.train.labels, run.val.features,
                                   run.val.labels, ks=(5,))
    top1 = run.frame.query("metric == 'top1'").value.iloc[0]
    assert np.isclose(top1, direct.top1[5])
    assert set(dinoeval.__all__) >= {"load_backbone", "get_source", "extract_features"}
