"""DeepLab's "poly" learning rate with slow start.

    step' = max(step - slow_start_step, 0)
    lr    = base * (1 - min(step', D) / D) ^ power        D = total - slow_start_step
    lr    = slow_start_learning_rate                       while step < slow_start_step

(``tf.train.polynomial_decay`` with end learning rate 0, as DeepLab's
``get_model_learning_rate``.) The step is the optimizer's iteration count, so
a resumed run continues the schedule where it stopped.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class PolyWithSlowStart(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, base_learning_rate, training_number_of_steps, learning_power=0.9,
                 slow_start_step=0, slow_start_learning_rate=1e-4, end_learning_rate=0.0):
        if training_number_of_steps <= slow_start_step:
            raise ValueError(
                f"training_number_of_steps ({training_number_of_steps}) must exceed "
                f"slow_start_step ({slow_start_step})")
        self.base_learning_rate = float(base_learning_rate)
        self.training_number_of_steps = int(training_number_of_steps)
        self.learning_power = float(learning_power)
        self.slow_start_step = int(slow_start_step)
        self.slow_start_learning_rate = float(slow_start_learning_rate)
        self.end_learning_rate = float(end_learning_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decay_steps = float(self.training_number_of_steps - self.slow_start_step)
        adjusted = tf.minimum(tf.maximum(step - self.slow_start_step, 0.0), decay_steps)
        poly = ((self.base_learning_rate - self.end_learning_rate)
                * (1.0 - adjusted / decay_steps) ** self.learning_power
                + self.end_learning_rate)
        return tf.where(step < self.slow_start_step,
                        tf.constant(self.slow_start_learning_rate, tf.float32), poly)

    def get_config(self):
        return dict(base_learning_rate=self.base_learning_rate,
                    training_number_of_steps=self.training_number_of_steps,
                    learning_power=self.learning_power,
                    slow_start_step=self.slow_start_step,
                    slow_start_learning_rate=self.slow_start_learning_rate,
                    end_learning_rate=self.end_learning_rate)
