"""The simulator wing: Meta-World facts, the simulated robot, expert collection and closed-loop episodes.

    syvla.sim.metaworld    every Meta-World fact (dims, cameras, embodiment, EEF spec, instructions)
    syvla.sim.robot        CameraRig, make_env, SimRobot (MuJoCo; imported only where a robot runs)
    syvla.sim.expert       scripted expert episodes as frame-schema tables, with templated plans
    syvla.sim.collect      expert collection as plain functions; syvla.sim.ray_collect runs it on Ray
    syvla.sim.episodes     the one closed-loop episode runner (in-process Policy or served endpoint)
    syvla.sim.evaluate     the evaluation of a checkpoint: closed loop + open-loop action error

Layering: syvla.train, syvla.rl, pipelines, bench and tests may import syvla.sim;
syvla.model, syvla.data and syvla.serving never do.
"""
