import React from 'react';
import { Pressable, StyleSheet, Text } from 'react-native';

export function Counter({ value, onPress }) {
  return (
    <Pressable accessibilityRole="button" onPress={onPress} style={styles.button}>
      <Text style={styles.label}>Tapped {value} {value === 1 ? 'time' : 'times'}</Text>
    </Pressable>
  );
}

const styles = StyleSheet.create({
  button: { paddingHorizontal: 20, paddingVertical: 10, borderRadius: 8, backgroundColor: '#f5a623' },
  label: { color: '#1d1d1f', fontSize: 16 },
});
