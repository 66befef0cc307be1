# Generated from results/paper/*.yaml by `python scripts/make_tables.py --make-rows`: edit those files,
# then regenerate; tests/test_paper.py checks this file is up to date. One target per paper row and arm,
# e.g. `make cifar100-sgd-gal NPROC=4 SEEDS=0`; ARGS="..." adds Hydra overrides.

PAPER_ROW_NAMES := cifar10-sgd cifar10-lookahead cifar10-adabound cifar100-sgd cifar100-lookahead cifar100-adabound imagenet-resnet50-rmsprop imagenet-effnet-b2-rmsprop coco-detr-r50 coco-detr-r101 table5-boston table5-diabetes table5-california
.PHONY: $(PAPER_ROW_NAMES) $(addsuffix -gal,$(PAPER_ROW_NAMES))

cifar10-sgd: venv
	$(TRAIN) --multirun experiment=table1_cifar10_sgd gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
cifar10-sgd-gal: venv
	$(TRAIN) --multirun experiment=table1_cifar10_sgd gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

cifar10-lookahead: venv
	$(TRAIN) --multirun experiment=table1_cifar10_lookahead gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
cifar10-lookahead-gal: venv
	$(TRAIN) --multirun experiment=table1_cifar10_lookahead gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

cifar10-adabound: venv
	$(TRAIN) --multirun experiment=table1_cifar10_adabound gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
cifar10-adabound-gal: venv
	$(TRAIN) --multirun experiment=table1_cifar10_adabound gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

cifar100-sgd: venv
	$(TRAIN) --multirun experiment=table2_cifar100_sgd gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
cifar100-sgd-gal: venv
	$(TRAIN) --multirun experiment=table2_cifar100_sgd gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

cifar100-lookahead: venv
	$(TRAIN) --multirun experiment=table2_cifar100_lookahead gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
cifar100-lookahead-gal: venv
	$(TRAIN) --multirun experiment=table2_cifar100_lookahead gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

cifar100-adabound: venv
	$(TRAIN) --multirun experiment=table2_cifar100_adabound gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
cifar100-adabound-gal: venv
	$(TRAIN) --multirun experiment=table2_cifar100_adabound gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

imagenet-resnet50-rmsprop: venv
	$(TRAIN) --multirun experiment=table3_imagenet_resnet50 gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
imagenet-resnet50-rmsprop-gal: venv
	$(TRAIN) --multirun experiment=table3_imagenet_resnet50 gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

imagenet-effnet-b2-rmsprop: venv
	$(TRAIN) --multirun experiment=table3_imagenet_effnet_b2 gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
imagenet-effnet-b2-rmsprop-gal: venv
	$(TRAIN) --multirun experiment=table3_imagenet_effnet_b2 gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

coco-detr-r50: venv
	$(TRAIN) --multirun experiment=table4_coco_detr_r50 gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
coco-detr-r50-gal: venv
	$(TRAIN) --multirun experiment=table4_coco_detr_r50 gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

coco-detr-r101: venv
	$(TRAIN) --multirun experiment=table4_coco_detr_r101 gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)
coco-detr-r101-gal: venv
	$(TRAIN) --multirun experiment=table4_coco_detr_r101 gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)

table5-boston: venv
	$(TRAIN) --multirun experiment=table5_boston gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4) trainer.if_exists=skip $(ARGS)
table5-boston-gal: venv
	$(TRAIN) --multirun experiment=table5_boston gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4) trainer.if_exists=skip $(ARGS)

table5-diabetes: venv
	$(TRAIN) --multirun experiment=table5_diabetes gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4) trainer.if_exists=skip $(ARGS)
table5-diabetes-gal: venv
	$(TRAIN) --multirun experiment=table5_diabetes gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4) trainer.if_exists=skip $(ARGS)

table5-california: venv
	$(TRAIN) --multirun experiment=table5_california gal=off seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4) trainer.if_exists=skip $(ARGS)
table5-california-gal: venv
	$(TRAIN) --multirun experiment=table5_california gal=on seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4) trainer.if_exists=skip $(ARGS)
